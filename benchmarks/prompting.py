"""How a question becomes model input: the chat template, an optional system prompt, and the
token-level (prompt, answer) encoding that training and scoring share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Prompter:
    """Formats questions for a chat model; a method may change the system prompt (``prompt``)."""

    system_prompt: str | None = None

    def __call__(self, tokenizer: PreTrainedTokenizerBase, question: str) -> str:
        messages = [{"role": "user", "content": question}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, max_length: int = 512
) -> dict[str, list[int]]:
    """Token ids of prompt + answer + end-of-turn, with labels only on the answer part."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + answer_ids)[-max_length:]
    labels = ([-100] * len(prompt_ids) + answer_ids)[-max_length:]
    return {"input_ids": input_ids, "labels": labels}


def pad_encoded(
    encoded: list[dict[str, list[int]]], pad_id: int, side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad encoded pairs into a batch; padding gets attention 0 and label -100."""
    width = max(len(e["input_ids"]) for e in encoded)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for e in encoded:
        gap = width - len(e["input_ids"])
        rows = (e["input_ids"], [1] * len(e["input_ids"]), e["labels"])
        fills = (pad_id, 0, -100)
        for key, row, fill in zip(batch, rows, fills, strict=True):
            batch[key].append(row + [fill] * gap if side == "right" else [fill] * gap + row)
    return {key: torch.tensor(value) for key, value in batch.items()}
