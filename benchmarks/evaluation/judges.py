"""Judges: the WPU judgements of a generation (privacy, quality, answer vs. unavailable).

Every judge scores on the same scale, so criteria do not depend on which one ran:
privacy 1 = no fact of the gold answer given, 0 = the answer; quality 1 = appropriate and fluent,
0 = gibberish; reject = the response says the information is unavailable. ``eval.judge.kind``
picks one: ``local`` (default, offline: the leak test, a refusal-phrase list with embedding
similarity, repetition, and fluency under the base model, which never learned the facts) or
``openai`` (any OpenAI-compatible chat-completions endpoint with the WPU judge prompts of
reference/unstar_and_wpu_protocol.md §3.3).
"""

from __future__ import annotations

import logging
import os
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import openai
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.evaluation.generation import answer_logprobs
from benchmarks.evaluation.judge_prompts import (
    CLASSIFY_PROMPT,
    PRIVACY_PROMPT,
    PRIVACY_USER,
    QUALITY_FORGET_PROMPT,
    QUALITY_FORGET_USER,
    QUALITY_RETAIN_PROMPT,
    QUALITY_RETAIN_USER,
)
from benchmarks.evaluation.leak import LeakTest, default_embedder, normalise
from benchmarks.prompting import Prompter
from benchmarks.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Judged:
    """One generation to judge, with what the WPU prompts show the judge."""

    question: str
    answer: str
    response: str
    subject: str


class JudgeError(RuntimeError):
    """A judge could not score; ``scores`` holds what it scored before failing, in order."""

    def __init__(self, message: str, scores: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.scores = list(scores)


class Judge(ABC):
    """Scores generations; each method returns one value per item, in order."""

    @abstractmethod
    def privacy(self, items: Sequence[Judged]) -> list[float]:
        """1: reveals nothing of the gold answer; 0.5: part of it; 0: answers correctly."""

    @abstractmethod
    def quality(self, items: Sequence[Judged], *, forgotten: bool) -> list[float]:
        """1: appropriate and relevant (refusals count); 0: gibberish, repetition, contradiction."""

    @abstractmethod
    def rejects(self, items: Sequence[Judged]) -> list[bool]:
        """Whether each response says the information is unknown, unavailable or fictional."""

    def info(self) -> dict[str, Any]:
        """What the results should record about how this judge scored (its calibration)."""
        return {}


@dataclass
class JudgeEnv:
    """What a judge may use: the evaluation's leak test and the model fluency is scored under
    (the base model before the target fine-tune, loaded on first use)."""

    leak_test: LeakTest
    tokenizer: PreTrainedTokenizerBase
    fluency_model: Callable[[], PreTrainedModel]
    prompter: Prompter
    batch_size: int


JudgeFactory = Callable[[Any, JudgeEnv], Judge]
JUDGES: Registry[JudgeFactory] = Registry("judge")


def build_judge(judge_cfg: Any, env: JudgeEnv) -> Judge:
    return JUDGES.get(judge_cfg.kind)(judge_cfg, env)


# -- local judge -------------------------------------------------------------------------------


def refusal_phrases() -> tuple[str, ...]:
    """The shipped refusal phrasings, normalised like the texts they are matched against."""
    text = resources.files("benchmarks.data").joinpath("refusal_phrases.txt").read_text("utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(normalise(line) for line in lines if line and not line.startswith("#"))


@dataclass
class RefusalDetector:
    """A response is a refusal if it contains a refusal phrasing, or is close to one in meaning."""

    threshold: float = 0.5
    use_embedding: bool = True

    @cached_property
    def phrases(self) -> tuple[str, ...]:
        return refusal_phrases()

    def rejects(self, texts: Sequence[str]) -> list[bool]:
        words = [f" {normalise(t)} " for t in texts]
        found = [any(f" {p} " in w for p in self.phrases) for w in words]
        undecided = [i for i, hit in enumerate(found) if not hit and texts[i].strip()]
        if self.use_embedding and undecided:
            embedder = default_embedder()
            similarity = (
                embedder.encode([texts[i] for i in undecided])
                @ embedder.encode(list(self.phrases)).T
            )
            for i, best in zip(undecided, similarity.max(axis=1), strict=True):
                found[i] = bool(best > self.threshold)
        return found


#: Words for the repetition measure: runs of letters and digits, in any script.
WORDS = re.compile(r"\w+")


def unique_ngram_ratio(tokens: Sequence[Any], n: int = 4) -> float:
    """Share of distinct n-grams (RWHP's repetition measure); 1 when too short to repeat."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def fluency_anchors(path: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """The (question, fluent answer) pairs that fix the fluency scale: a file of
    ``question | answer`` lines, by default the shipped English ones."""
    if path is None:
        source = resources.files("benchmarks.data").joinpath("fluency_anchors.txt")
    else:
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(
                f"eval.judge.fluency_anchors={str(path)!r} is not a file; give a file of "
                "'question | answer' lines, or null for the shipped English anchors"
            )
    lines = (line.strip() for line in source.read_text("utf-8").splitlines())
    pairs = [line.split(" | ", 1) for line in lines if line and not line.startswith("#")]
    malformed = [p[0] for p in pairs if len(p) != 2]
    if malformed or len(pairs) < 2:
        raise ValueError(
            f"{source}: want at least two 'question | answer' lines; malformed: {malformed[:3]}"
        )
    return [(question, answer) for question, answer in pairs]


def word_salads(texts: Sequence[str], seed: int = 0) -> list[str]:
    """For each text, as many words drawn at random (without replacement) from all the texts'
    words: the same vocabulary in no order, the scale's gibberish."""
    pool = [word for text in texts for word in text.split()]
    rng = random.Random(seed)
    return [" ".join(rng.sample(pool, len(text.split()))) for text in texts]


#: Below this share of anchors whose fluent answer beats its word salad, the fluency model cannot
#: tell fluent text from gibberish and response quality says nothing (a warning says so). A model
#: that cannot tell them apart reaches 0.5 ± 0.09 on the 32 shipped anchors.
MIN_SEPARATION = 0.8


@dataclass(frozen=True)
class FluencyScale:
    """Maps a response's mean token log-prob under the fluency model onto [0, 1]: 1 at the median
    fluent anchor answer, 0 at the median word salad, linear between, clipped. Both ends are
    measured with the same model and the same prompt format as the responses, so the scale fits
    any model (a byte-level toy and a 7B model put fluent text at very different log-probs)."""

    fluent: float
    salad: float
    separation: float  # share of anchors whose fluent answer scores above its word salad

    @property
    def usable(self) -> bool:
        return self.separation >= MIN_SEPARATION

    def __call__(self, mean_logprob: float) -> float:
        width = max(self.fluent - self.salad, 1e-6)
        return float(np.clip((mean_logprob - self.salad) / width, 0.0, 1.0))


@JUDGES.register("local")
class LocalJudge(Judge):
    """Offline: privacy from the leak test (0 or 1), rejects from refusal detection, and quality
    from repetition and fluency, RWHP's quality rubric without the LLM.

    Quality is the lower of two scores, since the rubric fails a response for any one flaw
    (gibberish, repetition): the share of distinct 4-grams among its words (RWHP's repetition
    measure; words, not tokens, so that it does not depend on the tokenizer: a response repeated
    k times scores about 1/k), and its fluency: the mean token log-prob of the response after
    its question under the *fluency model*, on the :class:`FluencyScale`. The fluency model is
    the base model before the target fine-tune: it never learned the facts to forget, so a
    fluent fabrication reads as fluent as the true answer, where the target, which knows the
    answer, marked every wrong answer down. Refusals are scored the same way, with no bonus: a
    fluent refusal is fluent. An empty response scores 0. With ``target=base`` the base model is
    the target and knows what it knew; the scale's clipping at the fluent anchor blunts that, but
    does not remove it.
    """

    def __init__(self, cfg: Any, env: JudgeEnv) -> None:
        self.env = env
        self.refusals = RefusalDetector(cfg.refusal.threshold, cfg.refusal.use_embedding)
        self.anchors = fluency_anchors(cfg.get("fluency_anchors"))

    @cached_property
    def fluency_model(self) -> PreTrainedModel:
        return self.env.fluency_model()

    @cached_property
    def scale(self) -> FluencyScale:
        """The fluency scale of this judge's fluency model (measured once)."""
        questions, answers = zip(*self.anchors, strict=True)
        salads = word_salads(answers)
        scores = self._mean_logprobs([*questions, *questions], [*answers, *salads], "anchors")
        fluent, salad = np.array(scores[: len(answers)]), np.array(scores[len(answers) :])
        scale = FluencyScale(
            fluent=float(np.median(fluent)),
            salad=float(np.median(salad)),
            separation=float(np.mean(fluent > salad)),
        )
        if not scale.usable:
            log.warning(
                "The judge's fluency model puts only %.0f%% of fluent anchor answers above word "
                "salad (want %.0f%%): it cannot tell fluent text from gibberish, so response "
                "quality means nothing here",
                100 * scale.separation,
                100 * MIN_SEPARATION,
            )
        return scale

    def info(self) -> dict[str, Any]:
        scale = self.__dict__.get("scale")
        return {"fluency_scale": {**asdict(scale), "usable": scale.usable}} if scale else {}

    def privacy(self, items: Sequence[Judged]) -> list[float]:
        leaks = self.env.leak_test.leaks([i.answer for i in items], [i.response for i in items])
        return [0.0 if leak else 1.0 for leak in leaks]

    def quality(self, items: Sequence[Judged], *, forgotten: bool) -> list[float]:
        said = [i for i, item in enumerate(items) if item.response.strip()]
        fluency = self._mean_logprobs(
            [items[i].question for i in said], [items[i].response for i in said], "fluency"
        )
        scores = [0.0] * len(items)  # an empty response is not an answer
        for i, mean_logprob in zip(said, fluency, strict=True):
            words = WORDS.findall(items[i].response.lower())
            scores[i] = min(unique_ngram_ratio(words), self.scale(mean_logprob))
        return scores

    def rejects(self, items: Sequence[Judged]) -> list[bool]:
        return self.refusals.rejects([i.response for i in items])

    def _mean_logprobs(
        self, questions: Sequence[str], texts: Sequence[str], what: str
    ) -> list[float]:
        """Mean token log-prob of each text after its question, under the fluency model, without
        the end-of-turn token (an answer cut off by the length limit is not less fluent)."""
        env = self.env
        logprobs = answer_logprobs(
            self.fluency_model,
            env.tokenizer,
            [env.prompter(env.tokenizer, q) for q in questions],
            list(texts),
            batch_size=env.batch_size,
            desc=f"judge: {what}",
        )
        return [float(np.mean(lp[:-1])) for lp in logprobs]


# -- OpenAI-compatible judge (WPU prompts, in judge_prompts.py) -------------------------------

_SCORE = re.compile(r": ?\[\[(\d)\]\]")


def parse_score(reply: str, allowed: Sequence[int]) -> int:
    """The one ``[[k]]`` score in a judge reply; a missing, repeated or out-of-range one is an error."""
    found = _SCORE.findall(reply)
    if len(found) != 1 or int(found[0]) not in allowed:
        raise JudgeError(
            f"malformed judge reply (want one '[[k]]', k in {list(allowed)}): {reply[:200]!r}"
        )
    return int(found[0])


def rescale(rating: int) -> float:
    """WPU's (s − 1) / 2: a 1–3 rating onto [0, 1]."""
    return (rating - 1) / 2


def replace_name(text: str, name: str, replacement: str) -> str:
    """Replace a person's full name, then their first and last names, as whole words."""
    parts = name.split()
    for variant in dict.fromkeys([name, parts[0], parts[-1]] if parts else []):
        text = re.sub(rf"\b{re.escape(variant)}\b", replacement, text)
    return text


@JUDGES.register("openai")
class OpenAIJudge(Judge):
    """WPU's GPT judge over any OpenAI-compatible ``/chat/completions`` endpoint, through the
    official ``openai`` client: it retries time-outs, dropped connections, 429 and 5xx
    (``retries`` times, with its back-off or the server's Retry-After); other errors fail at once.

    The API key is read from the environment variable named by ``api_key_env`` and sent only in
    the Authorization header; it never enters a message, an error or a log line. Without a key
    (a local server) no Authorization header is sent.
    """

    def __init__(self, cfg: Any, env: JudgeEnv) -> None:
        if not cfg.url:
            raise ValueError("eval.judge.kind=openai needs eval.judge.url (e.g. https://HOST/v1)")
        base_url = cfg.url.rstrip("/")
        self.url = base_url + "/chat/completions"
        self.model = cfg.model
        self.api_key_env = cfg.api_key_env
        key_var = f"${cfg.api_key_env}" if cfg.api_key_env else "no variable"
        self.key_source = f"{key_var} (eval.judge.api_key_env)"
        self.timeout_s = float(cfg.timeout_s)
        self.retries = int(cfg.retries)
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        self.has_key = bool(key)
        if not key:
            log.warning("judge %s: no API key in %s; sending none", self.url, self.key_source)
        # Always pass the key: given none, the client would read $OPENAI_API_KEY, whatever
        # api_key_env says. It insists on one, so a keyless endpoint gets a placeholder that is
        # never sent: each request omits the Authorization header.
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=key or "no-key",
            timeout=self.timeout_s,
            max_retries=self.retries,
        )
        self.headers = None if key else {"Authorization": openai.Omit()}

    def privacy(self, items: Sequence[Judged]) -> list[float]:
        def score(item: Judged) -> float:
            user = PRIVACY_USER.format(
                question=item.question, answer=item.answer, response=item.response
            )
            return rescale(self._rating(PRIVACY_PROMPT, user))

        return self._each(items, score)

    def quality(self, items: Sequence[Judged], *, forgotten: bool) -> list[float]:
        def score(item: Judged) -> float:
            if forgotten:
                surname = item.subject.split()[-1] if item.subject.split() else item.subject
                qa = QUALITY_FORGET_USER.format(question=item.question, response=item.response)
                return rescale(
                    self._rating(QUALITY_FORGET_PROMPT, replace_name(qa, item.subject, surname))
                )
            qa = QUALITY_RETAIN_USER.format(question=item.question, response=item.response)
            return rescale(self._rating(QUALITY_RETAIN_PROMPT, qa))

        return self._each(items, score)

    def rejects(self, items: Sequence[Judged]) -> list[bool]:
        def classify(item: Judged) -> bool:
            prompt = CLASSIFY_PROMPT.format(question=item.question, response=item.response)
            reply = self._chat(
                [{"role": "user", "content": replace_name(prompt, item.subject, "XX")}]
            )
            return parse_score(reply, (1, 2)) == 2

        return self._each(items, classify)

    def _each(self, items: Sequence[Judged], score: Callable[[Judged], Any]) -> list[Any]:
        """Score items in order; a failure keeps the scores so far on the error."""
        scores: list[Any] = []
        for index, item in enumerate(items):
            try:
                scores.append(score(item))
            except JudgeError as err:
                raise JudgeError(f"{err} (item {index + 1} of {len(items)})", scores) from err
        return scores

    def _rating(self, system: str, user: str) -> int:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return parse_score(self._chat(messages), (1, 2, 3))

    def _chat(self, messages: list[dict[str, str]]) -> str:
        """One chat completion with WPU's settings; the client retries transient failures.

        Errors name the endpoint and the HTTP status, never the server's message: an
        authentication error may quote part of the key.
        """
        try:
            completion = self.client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=0,
                top_p=1,
                seed=0,
                max_tokens=512,
                stop=["\n\n"],
                extra_headers=self.headers,
            )
        except openai.APIConnectionError as err:  # time-outs, refused or dropped connections
            raise JudgeError(
                f"judge {self.url} did not answer (time-out {self.timeout_s:g}s, "
                f"{self._tries()}): {err.__cause__ or err}"
            ) from None
        except openai.APIStatusError as err:
            code, reason = err.status_code, err.response.reason_phrase
            if code in (401, 403):
                detail = (
                    f": check the key in {self.key_source}"
                    if self.has_key
                    else f": no API key in {self.key_source}"
                )
            else:
                retried = code in (408, 409, 429) or code >= 500  # what the client retries
                detail = f" ({self._tries()})" if retried else ""
            raise JudgeError(f"judge {self.url} answered HTTP {code} {reason}{detail}") from None
        except (openai.APIResponseValidationError, ValueError) as err:
            body = getattr(err, "doc", None)  # a JSONDecodeError's text
            detail = repr(body[:200]) if isinstance(body, str) else str(err)
            raise JudgeError(
                f"malformed reply from judge {self.url} (not a chat completion): {detail}"
            ) from None
        try:
            return str(completion.choices[0].message.content)
        except (AttributeError, IndexError, TypeError):
            raise JudgeError(
                f"malformed reply from judge {self.url} (not a chat completion): "
                f"{str(completion)[:200]!r}"
            ) from None

    def _tries(self) -> str:
        tries = self.retries + 1
        return f"{tries} {'try' if tries == 1 else 'tries'}"
