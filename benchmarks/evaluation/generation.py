"""Batched generation and answer scoring: the two model passes every metric is built from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.costs import COSTS, counting_forwards
from benchmarks.prefix import PromptCache, answer_logits, cache_argument, cache_prompts, can_share
from benchmarks.prompting import encode_pairs, pad_encoded

#: Rows (prompts × samples) a generation batch holds at most: their caches must fit in memory
#: (SmolLM2-135M: about 10 MB per row of a 200-token few-shot prompt).
MAX_ROWS = 256


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


#: Generation settings that change the next-token distribution beyond temperature; a model whose
#: generation config sets any of them is decoded by ``model.generate``, which applies them.
LOGITS_SETTINGS = (
    "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "begin_suppress_tokens", "suppress_tokens",
    "forced_bos_token_id", "forced_eos_token_id", "min_length", "min_new_tokens", "min_p",
    "typical_p", "epsilon_cutoff", "eta_cutoff", "exponential_decay_length_penalty",
    "sequence_bias", "guidance_scale", "watermarking_config", "top_h",
)  # fmt: skip


def plain_sampling(model: PreTrainedModel) -> bool:
    """Whether the model's generation config leaves the next-token distribution as the logits
    (and the temperature) give it, as :func:`_decode` samples it."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return True
    default = GenerationConfig()
    return all(getattr(config, k, None) == getattr(default, k, None) for k in LOGITS_SETTINGS)


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
    share_prefix: bool = True,
    reserve_room: bool = True,
) -> list[list[str]]:
    """``num_samples`` completions per prompt (greedy when temperature is 0), in batches of
    ``batch_size`` prompts grouped by length (fewer where their samples would exceed
    :data:`MAX_ROWS` rows); a seed fixes sampling.

    A completion ends at the end-of-turn token, at the first token whose text holds one of
    ``stop_strings`` (few-shot prompts stop at the line's end; text after it in that token is
    kept), or after ``max_new_tokens``. With ``share_prefix`` (where the model allows,
    :mod:`benchmarks.prefix`) a batch's common prompt prefix and each prompt, however many
    samples it gets, are computed once, and each completion leaves the batch when it ends
    (:func:`_decode`), so the rows still writing are the only ones computed. False, or a model
    that cannot share: ``model.generate`` on left-padded batches, each row computing its prompt
    and running until the batch's last row ends. ``reserve_room``: decoding writes each step's
    keys and values into room reserved in the cache (:meth:`PromptCache.reserve`); False grows
    the cache by concatenation, as transformers does (the same samples, for the speed check).
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    outputs: list[list[str]] = [[] for _ in prompts]
    share = share_prefix and plain_sampling(model)
    was_training = model.training
    model.eval()
    cuda_devices = [model.device] if model.device.type == "cuda" else []
    try:
        with (
            torch.random.fork_rng(devices=cuda_devices),
            counting_forwards(model),
            COSTS.timed("generate"),
        ):
            torch.manual_seed(seed)
            size = max(1, min(batch_size, MAX_ROWS // num_samples))
            for batch in tqdm(_batches(order, size), desc=desc, leave=False):
                cached = (
                    cache_prompts(
                        model, [encoded[i] for i in batch], tokenizer.pad_token_id, repeated=True
                    )
                    if share
                    else None
                )
                if cached is None:
                    texts = _hf_generate(
                        model, tokenizer, [prompts[i] for i in batch], max_new_tokens,
                        temperature, num_samples, stop_strings,
                    )  # fmt: skip
                else:
                    rows = torch.arange(len(batch), device=model.device)
                    if reserve_room:
                        cached.reserve(max_new_tokens)
                    texts = _decode(
                        model, tokenizer, cached.select(rows.repeat_interleave(num_samples)),
                        max_new_tokens, temperature, stop_strings,
                    )  # fmt: skip
                for j, i in enumerate(batch):
                    outputs[i] = [t.strip() for t in texts[j * num_samples : (j + 1) * num_samples]]
    finally:
        model.train(was_training)
    return outputs


def _hf_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    num_samples: int,
    stop_strings: Sequence[str],
) -> list[str]:
    """``model.generate`` on one left-padded batch: its completions, ``num_samples`` per prompt."""
    sampling = temperature > 0
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
        model.device
    )
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
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _decode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: PromptCache,
    max_new_tokens: int,
    temperature: float,
    stop_strings: Sequence[str],
) -> list[str]:
    """Greedy or temperature sampling from cached prompts, as ``model.generate`` does it (float32
    logits, argmax or a multinomial draw from their softmax at ``temperature``, the same random
    numbers for the same rows), except that a row leaves the batch, and its cache, once it has
    ended: what the batch computes shrinks as its completions end."""
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    rows = prompts.input_ids.shape[0]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    live = list(range(rows))  # the prompt row each cache row belongs to
    cache, mask = prompts.cache, prompts.attention_mask
    step_ids = prompts.input_ids[:, -1:]
    positions = torch.tensor(prompts.lengths, device=model.device).unsqueeze(1) - 1
    for _ in range(max_new_tokens):
        logits = model(
            input_ids=step_ids, attention_mask=mask, position_ids=positions,
            **{cache_argument(model): cache}, use_cache=True, logits_to_keep=1,
        ).logits[:, -1].float()  # fmt: skip
        if temperature > 0:
            # A draw for every row of the batch, ended ones too (from any distribution), as
            # model.generate draws: the sampler's random numbers then go to the same rows.
            probs = logits.new_ones(rows, logits.shape[-1])
            index = torch.tensor(live, device=model.device)
            probs[index] = F.softmax(logits / temperature, dim=-1)
            chosen = torch.multinomial(probs, 1).squeeze(1)[index]
        else:
            chosen = logits.argmax(-1)
        keep = []
        for j, token in enumerate(chosen.tolist()):
            row = tokens[live[j]]
            row.append(token)
            stopped = token in ends or (
                bool(stop_strings) and any(s in tokenizer.decode(row) for s in stop_strings)
            )
            if not stopped:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(live):
            index = torch.tensor(keep, device=model.device)
            cache.batch_select_indices(index)
            mask, positions, chosen = mask[index], positions[index], chosen[index]
            live = [live[j] for j in keep]
        step_ids = chosen.unsqueeze(1)
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
        positions = positions + 1
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    COSTS.add(generated_tokens=sum(sum(t not in ends for t in row) for row in tokens))
    return texts


@torch.no_grad()
def answer_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    desc: str = "score",
    share_prefix: bool = True,
) -> list[np.ndarray]:
    """Per-token log-probabilities of each answer (with its end-of-turn token) after its prompt.

    With ``share_prefix`` the answers of one prompt are scored from one computation of it and a
    batch's common prefix is computed once (:mod:`benchmarks.prefix`); the output layer runs
    only where an answer token is predicted. False: each (prompt, answer) pair is one row."""
    encoded = encode_pairs(tokenizer, prompts, answers, site=desc)
    scores: list[np.ndarray] = [np.empty(0)] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        with COSTS.timed("score"), counting_forwards(model):
            if share_prefix and can_share(model):
                _score_shared(model, tokenizer, encoded, scores, batch_size, desc)
            else:
                _score_rows(model, tokenizer, encoded, scores, batch_size, desc)
    finally:
        model.train(was_training)
    return scores


def _score_rows(model, tokenizer, encoded, scores, batch_size: int, desc: str) -> None:
    """Each pair a right-padded row, batches of similar length."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    for batch in tqdm(_batches(order, batch_size), desc=desc, leave=False):
        _score_batch(model, tokenizer, encoded, scores, batch)


def _score_batch(model, tokenizer, encoded, scores, batch: list[int]) -> None:
    tensors = pad_encoded([encoded[i] for i in batch], tokenizer.pad_token_id, side="right")
    tensors = {k: v.to(model.device) for k, v in tensors.items()}
    logits = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]).logits
    _keep(scores, batch, logits[:, :-1], tensors["labels"][:, 1:])


def _score_shared(model, tokenizer, encoded, scores, batch_size: int, desc: str) -> None:
    """Pairs grouped by prompt: each batch computes its prompts once (their common prefix once)
    and every answer from its prompt's cache."""
    prompt_of = [tuple(e["input_ids"][: e["labels"].count(-100)]) for e in encoded]
    order = sorted(range(len(encoded)), key=lambda i: (len(prompt_of[i]), prompt_of[i], i))
    for batch in tqdm(_batches(order, batch_size), desc=desc, leave=False):
        prompts = list(dict.fromkeys(prompt_of[i] for i in batch))
        cached = cache_prompts(model, prompts, tokenizer.pad_token_id, repeated=True)
        if cached is None:  # a one-token prompt: nothing to cache
            _score_batch(model, tokenizer, encoded, scores, batch)
            continue
        index = {prompt: row for row, prompt in enumerate(prompts)}
        rows = torch.tensor([index[prompt_of[i]] for i in batch], device=model.device)
        answers = [encoded[i]["input_ids"][len(prompt_of[i]) :] for i in batch]
        logits = answer_logits(model, cached.select(rows), answers, tokenizer.pad_token_id)
        width = logits.shape[1]
        labels = torch.tensor([a + [-100] * (width - len(a)) for a in answers], device=model.device)
        _keep(scores, batch, logits, labels)


def _keep(scores: list[np.ndarray], batch: list[int], logits, labels) -> None:
    """Each row's log-prob of its labels (-100: none), where ``logits[:, t]`` predicts ``labels[:, t]``."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    mask = labels != -100
    token_lp = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    for row, i in enumerate(batch):
        scores[i] = token_lp[row][mask[row]].cpu().numpy()
