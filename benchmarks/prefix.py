"""Prompt prefixes that rows share, computed once per batch instead of once per row.

A batch's rows often start alike: every chat prompt with the template's system prompt, every
UnSTAR prompt with the same few-shot examples, a question sampled n times or scored against five
answers. Attention is causal, so the keys and values of a shared prefix are the same in every
row: computing them once and copying them into each row's cache gives each row what its own
forward would (up to float rounding: a matrix product over fewer rows may round differently),
for a fraction of the work. Under training the gradients are the same too: the copies' gradients
add up in the one computed prefix, as the rows' would in the shared weights.

Three users: :func:`benchmarks.evaluation.generation.generate` caches every prompt but its last
token (:func:`cache_prompts`) and lets ``model.generate`` continue from there;
:func:`benchmarks.evaluation.generation.answer_logprobs` scores each answer from its question's
cache; the trainer's answer likelihoods (:func:`label_logits`) compute a batch's common prefix
once and the output layer only where a label is predicted. A model that cannot be served this way
(no cache argument in its forward, an encoder-decoder, a cache layer other than plain full
attention, dropout while training: one prefix would share one dropout mask) gets the plain forward.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer

from benchmarks.costs import COSTS

#: Shared tokens below which a batch takes the plain forward: the split costs an extra call.
MIN_SHARED = 4


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row has in common."""
    shortest = min(len(row) for row in rows)
    first = rows[0]
    for position in range(shortest):
        token = first[position]
        if any(row[position] != token for row in rows):
            return position
    return shortest


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _forward_arguments(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def cache_argument(model: Any) -> str | None:
    """The name the model's forward takes a cache by (transformers 5 renamed it)."""
    arguments = _forward_arguments(type(_base(model)))
    return next((name for name in ("cache", "past_key_values") if name in arguments), None)


def keeps_logits(model: Any) -> bool:
    """Whether the model's forward can compute the output layer for the last positions only."""
    return isinstance(getattr(model, "config", None), PretrainedConfig) and (
        "logits_to_keep" in _forward_arguments(type(_base(model)))
    )


def _new_cache(model: Any) -> DynamicCache | None:
    """An empty cache for the model, or None where its layers are not plain full attention."""
    cache = DynamicCache(config=model.config)
    if all(type(layer) is DynamicLayer for layer in cache.layers):
        return cache
    return None


def can_share(model: Any) -> bool:
    """Whether prefixes of this model's batches can be computed apart (see the module doc)."""
    config = getattr(model, "config", None)
    if not isinstance(config, PretrainedConfig) or config.is_encoder_decoder:
        return False
    if cache_argument(model) is None or not keeps_logits(model):
        return False
    if model.training and torch.is_grad_enabled():
        dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()) or any(
            getattr(config, name, 0) for name in ("attention_dropout", "hidden_dropout")
        )
        if dropout:
            return False
    return _new_cache(model) is not None


def _run(model: Any, cache: DynamicCache, **inputs: Any) -> Any:
    return model(**inputs, **{cache_argument(model): cache}, use_cache=True)


class ReservedLayer(DynamicLayer):
    """A full-attention cache layer with room for tokens to come: a decoding step writes its keys
    and values into the room, where :class:`DynamicLayer` concatenates them, copying the whole
    cache at every step (sampling 16 paraphrases each from UnSTAR's 172-token few-shot prompts
    runs 1.10x faster without those copies, measured with ``python -m benchmarks.speed
    --check``). The keys and values it hands to attention are views of the filled part, so the
    numbers are the same as the concatenated ones."""

    def __init__(self, layer: DynamicLayer, room: int) -> None:
        super().__init__()
        self.device, self.is_initialized = layer.device, True
        self._keys, self._values = (_with_room(t, room) for t in (layer.keys, layer.values))
        self._show(layer.keys.shape[-2])

    def _show(self, length: int) -> None:
        self.keys, self.values = self._keys[..., :length, :], self._values[..., :length, :]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # out of room: double it
            self._keys, self._values = (
                _with_room(t, max(end, 2 * start) - start) for t in (self.keys, self.values)
            )
        self._keys[..., start:end, :] = key_states
        self._values[..., start:end, :] = value_states
        self._show(end)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        length = self.get_seq_length()
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._show(length)

    def batch_repeat_interleave(self, repeats: int) -> None:
        length = self.get_seq_length()
        self._keys = self._keys.repeat_interleave(repeats, dim=0)
        self._values = self._values.repeat_interleave(repeats, dim=0)
        self._show(length)


def _with_room(states: torch.Tensor, room: int) -> torch.Tensor:
    """``states`` (batch, heads, tokens, dim) copied into a buffer with ``room`` more tokens."""
    batch, heads, tokens, dim = states.shape
    buffer = states.new_empty(batch, heads, tokens + room, dim)
    buffer[..., :tokens, :] = states
    return buffer


@dataclass
class PromptCache:
    """Keys and values of every prompt but its last token, one row per prompt.

    ``mask`` is the attention mask of the cached columns (the shared prefix, then each prompt's
    rest, left-padded); ``input_ids`` and ``attention_mask`` are the whole prompts laid out the
    same way, their last column the last prompt token, which the next forward computes."""

    cache: DynamicCache
    mask: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: list[int]

    def reserve(self, room: int) -> None:
        """Make room in the cache for ``room`` tokens a row: a decoding step then writes into it
        instead of copying the cache (:class:`ReservedLayer`). Before :meth:`select`, which
        copies the cache once per row it repeats, room included."""
        layers = self.cache.layers
        layers[:] = [
            ReservedLayer(layer, room) if layer.is_initialized else layer for layer in layers
        ]

    def select(self, rows: torch.Tensor) -> PromptCache:
        """The cache with rows chosen (repeated: one per sample or per scored answer); in place."""
        self.cache.batch_select_indices(rows)
        return PromptCache(
            self.cache,
            self.mask[rows],
            self.input_ids[rows],
            self.attention_mask[rows],
            [self.lengths[i] for i in rows.tolist()],
        )


@torch.no_grad()
def cache_prompts(
    model: Any, prompts: Sequence[Sequence[int]], pad_id: int, *, repeated: bool = False
) -> PromptCache | None:
    """Compute the prompts' common prefix once, then the rest of each prompt but its last token.

    None where the model cannot share (:func:`can_share`), or where the prompts share fewer than
    :data:`MIN_SHARED` tokens and will not be ``repeated`` (several samples or answers per
    prompt), so that nothing would be computed once for several rows."""
    if not prompts or min(len(p) for p in prompts) < 2 or not can_share(model):
        return None
    device = model.device
    rows = len(prompts)
    shared = min(common_prefix(prompts), min(len(p) for p in prompts) - 1)
    if not repeated and (rows == 1 or shared < MIN_SHARED):
        return None
    cache = _new_cache(model)
    head = {"logits_to_keep": 1}
    with COSTS.part_of_pass():
        if shared:
            ids = torch.tensor([list(prompts[0][:shared])], device=device)
            _run(model, cache, input_ids=ids, attention_mask=torch.ones_like(ids), **head)
            cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=device))
        rests = [list(p[shared:-1]) for p in prompts]
        width = max(len(rest) for rest in rests)
        rest_ids = torch.tensor(
            [[pad_id] * (width - len(rest)) + rest for rest in rests],
            dtype=torch.long,
            device=device,
        ).reshape(rows, width)
        rest_mask = torch.tensor(
            [[0] * (width - len(rest)) + [1] * len(rest) for rest in rests],
            dtype=torch.long,
            device=device,
        ).reshape(rows, width)
        mask = torch.cat([torch.ones(rows, shared, dtype=torch.long, device=device), rest_mask], 1)
        if width:
            positions = (shared + rest_mask.cumsum(-1) - 1).clamp(min=0)
            _run(
                model, cache, input_ids=rest_ids, attention_mask=mask, position_ids=positions,
                **head,
            )  # fmt: skip
    prefix = torch.tensor(
        [list(prompts[0][:shared])] * rows, dtype=torch.long, device=device
    ).reshape(rows, shared)
    last = torch.tensor([[p[-1]] for p in prompts], device=device)
    ones = torch.ones(rows, 1, dtype=torch.long, device=device)
    return PromptCache(
        cache,
        mask,
        torch.cat([prefix, rest_ids, last], 1),
        torch.cat([mask, ones], 1),
        [len(p) for p in prompts],
    )


def answer_logits(
    model: Any, prompts: PromptCache, answers: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """Logits that predict each answer's tokens after its prompt (row i: ``prompts`` row i), from
    the prompt's cache: position j of row i predicts ``answers[i][j]``; right-padded."""
    device = model.device
    width = max(len(a) for a in answers)
    ids = [[int(prompts.input_ids[i, -1]), *a[:-1]] for i, a in enumerate(answers)]
    inputs = torch.tensor([row + [pad_id] * (width - len(row)) for row in ids], device=device)
    real = torch.tensor([[1] * len(a) + [0] * (width - len(a)) for a in answers], device=device)
    start = torch.tensor(prompts.lengths, device=device).unsqueeze(1) - 1
    positions = start + torch.arange(width, device=device)
    return _run(
        model,
        prompts.cache,
        input_ids=inputs,
        attention_mask=torch.cat([prompts.mask, real], 1),
        position_ids=positions,
    ).logits


def label_logits(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the positions that predict a label of a right-padded batch, and those labels
    (-100 where none): the output layer runs from the first such position on, and the batch's
    common prefix before it runs once, where the model allows (:func:`can_share`)."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    rows, length = ids.shape
    labelled = labels != -100
    first = torch.where(labelled.any(1), labelled.float().argmax(1), length).min().item()
    start = max(int(first) - 1, 0)  # the first position whose logits predict a label
    targets = torch.cat([labels[:, start + 1 :], labels.new_full((rows, 1), -100)], 1)
    shared = 0
    if start >= MIN_SHARED and can_share(model):
        real = ids.masked_fill(mask == 0, -1)[:, :start].tolist()
        shared = common_prefix(real)
    if shared < MIN_SHARED:
        shared = 0
    # Positions as an index tensor, not a count: the output layer then gets a contiguous copy of
    # the hidden states (a sliced view makes torch's linear fall back to a batched product,
    # measured 2.4x slower than the whole sequence's on CPU).
    keep = (
        {"logits_to_keep": torch.arange(start - shared, length - shared, device=ids.device)}
        if keeps_logits(model)
        else {}
    )
    if not shared:
        logits = model(input_ids=ids, attention_mask=mask, **keep).logits
        return logits[:, -(length - start) :], targets
    cache = _new_cache(model)
    with COSTS.part_of_pass():
        _run(model, cache, input_ids=ids[:1, :shared], attention_mask=mask[:1, :shared],
             logits_to_keep=1)  # fmt: skip
    cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=ids.device))
    logits = _run(model, cache, input_ids=ids[:, shared:], attention_mask=mask, **keep).logits
    return logits, targets
