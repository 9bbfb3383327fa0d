"""How a question becomes model input: the chat template, an optional system prompt, and the
token-level (prompt, answer) encoding that training and scoring share."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompter:
    """Formats questions for a chat model; a method may change the system prompt (``prompt``)."""

    system_prompt: str | None = None

    def __call__(self, tokenizer: PreTrainedTokenizerBase, question: str) -> str:
        messages = [{"role": "user", "content": question}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class PromptTooLongError(ValueError):
    """A prompt leaves no room for its answer within ``max_length`` tokens."""


#: Pairs whose answer :func:`encode_pairs` cut to ``max_length``, by call site, since the last
#: ``TRUNCATED.clear()``.
TRUNCATED: Counter[str] = Counter()


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, max_length: int = 512
) -> dict[str, Any]:
    """Token ids of prompt + answer + end-of-turn, with labels only on the answer part.

    An over-long pair loses the end of its answer, never the prompt; ``truncated`` says so.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_length:
        raise PromptTooLongError(
            f"the prompt has {len(prompt_ids)} tokens, leaving no room for the answer within "
            f"max_length={max_length}; raise max_length or shorten the prompt: {prompt[:80]!r}..."
        )
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    kept = answer_ids[: max_length - len(prompt_ids)]
    return {
        "input_ids": prompt_ids + kept,
        "labels": [-100] * len(prompt_ids) + kept,
        "truncated": len(kept) < len(answer_ids),
    }


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    max_length: int = 512,
    *,
    site: str,
) -> list[dict[str, Any]]:
    """:func:`encode_pair` over pairs; counts the truncated ones in ``TRUNCATED[site]`` and warns."""
    encoded = [
        encode_pair(tokenizer, p, a, max_length) for p, a in zip(prompts, answers, strict=True)
    ]
    count_truncated(site, [e["truncated"] for e in encoded], max_length)
    return encoded


def count_truncated(site: str, flags: Sequence[bool], max_length: int) -> None:
    """Add the truncated pairs to ``TRUNCATED[site]`` and warn once for the batch."""
    count = sum(flags)
    if count:
        TRUNCATED[site] += count
        log.warning(
            "%s: %d of %d answers cut to fit max_length=%d tokens",
            site,
            count,
            len(flags),
            max_length,
        )


def pad_encoded(
    encoded: list[dict[str, Any]], pad_id: int, side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad encoded pairs into a batch; padding gets attention 0 and label -100; other keys
    (``truncated``) are left out."""
    width = max(len(e["input_ids"]) for e in encoded)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for e in encoded:
        gap = width - len(e["input_ids"])
        rows = (e["input_ids"], [1] * len(e["input_ids"]), e["labels"])
        fills = (pad_id, 0, -100)
        for key, row, fill in zip(batch, rows, fills, strict=True):
            batch[key].append(row + [fill] * gap if side == "right" else [fill] * gap + row)
    return {key: torch.tensor(value) for key, value in batch.items()}
