"""Representation misdirection for unlearning (RMU): scramble the forget inputs' hidden states.

Li et al. 2024, "The WMDP Benchmark" (arXiv 2403.03218), §5 and the reference code
``centerforaisafety/wmdp`` ``rmu/unlearn.py`` (read through open-unlearning's port,
``src/trainer/unlearn/rmu.py``, and a verbatim fork; the WMDP repository itself is not in our
store, peer_harnesses.md §2, §8). With h_L(x) the output of decoder layer L (``model.layers[L]``):

    L_forget = mean over positions and dimensions of (h_L^θ(x_f) − c·u)²
    L_retain = mean over positions and dimensions of (h_L^θ(x_r) − h_L^frozen(x_r))²
    L = γ·L_forget + α·L_retain

u is a fixed unit vector, drawn once per job with the job seed as WMDP draws it (``torch.rand``,
uniform in [0, 1) per dimension, then normalised: a random direction in the positive orthant, not
uniform on the sphere); c is the steering coefficient. Only the parameters matching
``param_pattern`` in ``layers`` are updated (WMDP: ``mlp.down_proj`` of layers L−2..L).

Interpretation for QA data:

- Positions: WMDP steers every token of the forget text (its documents, no mask; padding is
  included there, excluded here). We do the same by default (``positions: all``): every
  non-padding token of prompt + answer, so the question naming the subject is scrambled too, and
  it is the question's last position that produces the first answer token at generation.
  ``positions: answer`` uses the answer tokens only (open-unlearning: ``labels != -100``).
  The retain term uses the same positions.
- Mean: over every (position, dimension) kept, as ``F.mse_loss`` over WMDP's unpadded batch
  (open-unlearning averages per sequence first; the two differ only in how lengths weigh).
- The retain term is RMU's own, not NLL/KL: :meth:`RMU.retain_loss` is the trainer's retain hook.
- The layer for SmolLM2-135M (30 layers): WMDP steers layer 7 of Zephyr-7B's 32, the output of
  its 8th layer, a quarter of the depth (early-middle). A quarter of 30 layers is 7.5: the output
  of layer 6 or 7; we keep 7 (27% of the depth; also open-unlearning's module), so the defaults
  are WMDP's for both models. Mistral-7B, the paper_wpu model, is Zephyr's base: layer 7 exactly.
- c and α: WMDP's Zephyr-7B run (its README command and the code defaults of a verbatim fork:
  c = 6.5, α = 1200, lr 5e-5, layers 5-7, ``down_proj``; not checked against the WMDP
  repository itself). open-unlearning's RMU.yaml has other c and α (its stored version: c = 300,
  α = 1000; peer_harnesses.md quotes c = 2, α = 1). c must match the scale of the layer's
  activations (the paper notes it grows with depth): ``method_metrics.rmu_activation_norm``
  records the mean ‖h_L‖ on the first forget batch, to set c against; ``search_space`` sweeps it.
- LoRA (``method.lora.enabled``): the adapters go on the chosen modules only, so the same
  parameters move (through a low-rank update).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from omegaconf import OmegaConf

from benchmarks.config import ConfigError, MethodConfig, knob
from benchmarks.methods import METHODS, TrainingMethod, Unlearned
from benchmarks.training import Batch, train


@dataclass
class RMUConfig(MethodConfig):
    layer: int = knob(7, "decoder layer whose output is steered (0-based: model.layers[L])", ge=0)
    layers: list[int] = knob(
        help="layers whose parameters are updated (empty: L-2..L)", default_factory=list
    )
    param_pattern: str = knob("mlp.down_proj", "regex searched in a parameter's name in a layer")
    steering_coeff: float = knob(6.5, "c: the forget inputs' hidden states are pushed to c·u", gt=0)
    positions: str = knob("all", "tokens in both terms", choices=("all", "answer"))
    retain_loss: str = knob(
        "hidden_mse",
        "RMU's retain term: MSE to the frozen model's hidden states at the layer",
        choices=("hidden_mse",),
    )


def decoder_layers(model: Any) -> tuple[str, torch.nn.ModuleList]:
    """The model's decoder layers and their name (``model.layers``), through DDP and peft."""
    while hasattr(model, "module"):  # a DistributedDataParallel wrapper
        model = model.module
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    count = base.config.num_hidden_layers
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return name, module
    raise ValueError(f"{type(base).__name__}: no list of {count} decoder layers found")


def layer_output(model: Any, batch: Batch, layer: int) -> torch.Tensor:
    """The output of decoder layer ``layer`` (batch × positions × hidden) in a forward pass."""
    _, layers = decoder_layers(model)
    captured: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = layers[layer].register_forward_hook(keep)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        handle.remove()
    return captured[0]


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (a − b)² over the hidden dimension and the positions where ``mask`` is set."""
    per_position = (a.float() - b.float()).pow(2).mean(-1)
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


def steering_direction(hidden_size: int, seed: int) -> torch.Tensor:
    """WMDP's u: uniform [0, 1) per dimension, normalised; the same for the same seed."""
    vector = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return vector / vector.norm()


@contextmanager
def only_trainable(model: torch.nn.Module, names: set[str]) -> Iterator[None]:
    """Freeze every parameter but ``names`` (the optimiser takes those with gradients only);
    restore each parameter's flag afterwards."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@METHODS.register("rmu")
class RMU(TrainingMethod):
    config_class = RMUConfig
    #: A search space for Hydra's Optuna sweeper (``hydra.sweeper.params``); the updated layers
    #: follow the steered one while ``method.layers`` is empty.
    search_space: ClassVar[dict[str, str]] = {
        "method.lr": "tag(log, interval(1e-6, 1e-4))",
        "method.steering_coeff": "tag(log, interval(1, 300))",
        "method.alpha": "tag(log, interval(1, 2000))",
        "method.layer": "int(interval(3, 14))",
    }

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.direction: torch.Tensor | None = None  # u, drawn by prepare()
        self.activation_norm: float | None = None  # mean ‖h_L‖ on the first forget batch

    def update_layers(self) -> list[int]:
        if not self.cfg.layers:
            return list(range(max(0, self.cfg.layer - 2), self.cfg.layer + 1))
        return sorted(set(self.cfg.layers))

    def prepare(self, model: torch.nn.Module, seed: int) -> list[str]:
        """Check the layers against the model, draw u; the names of the parameters to update."""
        prefix, layers = decoder_layers(model)
        count, layer = len(layers), self.cfg.layer
        if not 0 <= layer < count:
            raise ConfigError(
                f"method.layer={layer}, but the model has {count} decoder layers "
                f"(0..{count - 1}); set method.layer to one of them (RMU steers an "
                "early-middle layer: about a quarter of the depth)"
            )
        update = self.update_layers()
        if not update or not all(0 <= i <= layer for i in update):
            raise ConfigError(
                f"method.layers={update}: the updated layers must be among 0..{layer} "
                f"(method.layer={layer}); a later layer cannot change layer {layer}'s output"
            )
        pattern = re.compile(self.cfg.param_pattern)
        names, unmatched = [], []
        for index in update:
            within = [
                name
                for name, _ in layers[index].named_parameters()
                if pattern.search(name) is not None
            ]
            if not within:
                unmatched.append(index)
            names += [f"{prefix}.{index}.{name}" for name in within]
        if unmatched:
            examples = [name for name, _ in layers[0].named_parameters()][:8]
            raise ConfigError(
                f"method.param_pattern={self.cfg.param_pattern!r} matches no parameter of "
                f"layers {unmatched}; a layer's parameters are named like {examples}"
            )
        self.direction = steering_direction(model.config.hidden_size, seed)
        self.activation_norm = None
        return names

    def positions(self, batch: Batch) -> torch.Tensor:
        if self.cfg.positions == "answer":
            return (batch["labels"] != -100).float()
        return batch["attention_mask"].float()

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        if self.direction is None:
            raise RuntimeError("RMU.prepare(model, seed) draws u before the forget loss")
        hidden = layer_output(model, batch, self.cfg.layer)
        mask = self.positions(batch)
        if self.activation_norm is None:
            norms = hidden.detach().float().norm(dim=-1)
            self.activation_norm = ((norms * mask).sum() / mask.sum().clamp(min=1)).item()
        target = self.cfg.steering_coeff * self.direction.to(hidden.device)
        return masked_mse(hidden, target, mask)

    def retain_loss(self, model, batch, reference) -> torch.Tensor:
        hidden = layer_output(model, batch, self.cfg.layer)
        with reference().frozen() as frozen:
            original = layer_output(frozen, batch, self.cfg.layer)
        return masked_mse(hidden, original, self.positions(batch))

    def unlearn(self, model, tokenizer, data, ctx) -> Unlearned:
        names = self.prepare(model, ctx.seed)
        cfg = self.cfg
        if cfg.lora.enabled:  # adapters on the chosen modules only
            modules = self.lora_modules(model, names)
            cfg = OmegaConf.merge(cfg, {"lora": {"target_modules": "|".join(modules)}})
        stop = self.stopping(data, tokenizer, ctx)
        with only_trainable(model, set(names)):
            model, history = train(
                model,
                tokenizer,
                self.forget_pairs(data, tokenizer, ctx),
                self.retain_pairs(data, tokenizer, ctx) if cfg.alpha else [],
                self.forget_loss,
                cfg,
                seed=ctx.seed,
                phase="unlearn",
                log_fn=ctx.log_fn,
                retain_loss=self.retain_loss,
                callbacks=[stop],
            )
        final = history[-1] if history else {}
        metrics = {
            "train_loss": final.get("train_loss"),
            "rmu_layer": cfg.layer,
            "rmu_updated": names,
            "rmu_activation_norm": self.activation_norm,
            "stopping": stop.record(),
        }
        return Unlearned(model, ctx.prompter, metrics)

    @staticmethod
    def lora_modules(model: torch.nn.Module, names: list[str]) -> list[str]:
        """Escaped full names of the linear modules holding ``names`` (peft full-matches them)."""
        modules = dict(model.named_modules())
        owners = sorted({name.rsplit(".", 1)[0] for name in names})
        other = [owner for owner in owners if not isinstance(modules[owner], torch.nn.Linear)]
        if other:
            raise ConfigError(
                f"method.lora.enabled=true puts adapters on linear layers, but "
                f"method.param_pattern matches parameters of {other}; narrow the pattern "
                "(e.g. mlp.down_proj) or set method.lora.enabled=false"
            )
        return [re.escape(owner) for owner in owners]
