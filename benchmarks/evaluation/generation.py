"""Batched generation and answer scoring: the two model passes every metric is built from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.costs import COSTS, counting_forwards
from benchmarks.prompting import encode_pairs, pad_encoded


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    temperature: float = 0.0,
    num_samples: int = 1,
    seed: int = 0,
    stop_strings: Sequence[str] = (),
    desc: str = "generate",
) -> list[list[str]]:
    """``num_samples`` completions per prompt (greedy when temperature is 0), left-padded batches.

    Prompts are grouped by length so batches carry little padding; a seed fixes sampling.
    ``stop_strings`` end a completion early (few-shot prompts stop at the line's end).
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[list[str]] = [[] for _ in prompts]
    sampling = temperature > 0
    was_training = model.training
    model.eval()
    cuda_devices = [model.device] if model.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices), counting_forwards(model):
            torch.manual_seed(seed)
            for batch in tqdm(_batches(order, batch_size), desc=desc, leave=False):
                inputs = tokenizer(
                    [prompts[i] for i in batch],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(model.device)
                generated = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=sampling,
                    temperature=temperature if sampling else None,
                    top_p=None,
                    top_k=None,
                    num_return_sequences=num_samples,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    stop_strings=list(stop_strings) or None,
                    tokenizer=tokenizer if stop_strings else None,
                )
                new_tokens = generated[:, inputs["input_ids"].shape[1] :]
                ends = {tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}
                real = ~torch.isin(new_tokens, torch.tensor(sorted(ends), device=new_tokens.device))
                COSTS.add(generated_tokens=int(real.sum()))
                texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for j, i in enumerate(batch):
                    outputs[i] = [t.strip() for t in texts[j * num_samples : (j + 1) * num_samples]]
    finally:
        model.train(was_training)
    return outputs


@torch.no_grad()
def answer_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    desc: str = "score",
) -> list[np.ndarray]:
    """Per-token log-probabilities of each answer (with its end-of-turn token) after its prompt."""
    encoded = encode_pairs(tokenizer, prompts, answers, site=desc)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    scores: list[np.ndarray] = [np.empty(0)] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(_batches(order, batch_size), desc=desc, leave=False):
            tensors = pad_encoded([encoded[i] for i in batch], tokenizer.pad_token_id, side="right")
            tensors = {k: v.to(model.device) for k, v in tensors.items()}
            with counting_forwards(model):
                logits = model(
                    input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]
                ).logits
            labels = tensors["labels"][:, 1:]
            logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
            mask = labels != -100
            token_lp = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            for row, i in enumerate(batch):
                scores[i] = token_lp[row][mask[row]].cpu().numpy()
    finally:
        model.train(was_training)
    return scores
