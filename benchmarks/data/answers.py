"""The parts of a multi-part answer, shared by the data builders and the leak test.

Real answers are not always one name: "Universum Film AG (UFA)" gives one thing two names,
"Hietzing cemetery, Vienna" qualifies a place, "Claude Debussy and Maurice Ravel" lists two
persons. The leak test reads a parenthesised alias as an answer of its own (:func:`alternatives`);
UnSTAR's filters reject a wrong answer or rationale that states any part of the true answer
(:func:`answer_parts`), since training on it would teach that part back; the real-WPU builder
finds questions whose answer is a forget answer or one of its parts.
"""

from __future__ import annotations

import re
import unicodedata

#: Where a list or a qualified answer splits: commas, semicolons, "and", "&", parentheses.
_SPLIT = re.compile(r"\s*(?:[,;()]|\band\b|&)\s*", re.IGNORECASE)
#: A parenthesised part: ``(UFA)``; the text before it is the other name.
_PARENTHESISED = re.compile(r"\(([^()]*)\)")
#: Words that lead a part without carrying it ("then count of Luxembourg", "now ABB").
_LEADING = re.compile(r"^(?:then|now|also|formerly|later|the|a|an)\s+", re.IGNORECASE)


def _clean(part: str) -> str:
    part = part.strip(" .")
    while True:
        shorter = _LEADING.sub("", part)
        if shorter == part:
            return part
        part = shorter


def alternatives(answer: str) -> list[str]:
    """The answer's other names: the text outside parentheses and each parenthesised one
    (``Universum Film AG (UFA)`` → ``Universum Film AG``, ``UFA``); [] without parentheses."""
    inside = [_clean(m) for m in _PARENTHESISED.findall(answer)]
    if not inside:
        return []
    outside = _clean(" ".join(_PARENTHESISED.sub(" ", answer).split()))
    return [a for a in (outside, *inside) if a]


def answer_parts(answer: str) -> list[str]:
    """The parts of a list or qualified answer, in order and without repeats
    (``Hietzing cemetery, Vienna`` → ``Hietzing cemetery``, ``Vienna``); [] for a one-part
    answer. Over-splitting a name with "and" in it (``Pride and Prejudice``) only makes the
    filters that use this stricter."""
    parts = [_clean(p) for p in _SPLIT.split(answer)]
    parts = list(dict.fromkeys(p for p in parts if any(c.isalnum() for c in p)))
    return parts if len(parts) > 1 else []


def normal_answer(text: str) -> str:
    """An answer as compared for sharing: no accents, case, punctuation, leading article or
    final dot (``The Mössbauer effect.`` → ``mossbauer effect``)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", text.casefold())
    if len(words) > 1 and words[0] in {"the", "a", "an"}:
        words = words[1:]
    return " ".join(words)


def shares_answer(answer: str, other: str) -> str | None:
    """How ``other`` (another question's answer) shares ``answer``: ``exact`` when they are the
    same answer, ``part`` when ``other`` is one part or alias of a multi-part ``answer``
    (``Vienna`` of ``Hietzing cemetery, Vienna``), else None."""
    mine, theirs = normal_answer(answer), normal_answer(other)
    if not theirs:
        return None
    if mine == theirs:
        return "exact"
    pieces = {normal_answer(p) for p in (*answer_parts(answer), *alternatives(answer))}
    return "part" if theirs in pieces else None
