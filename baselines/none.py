"""No unlearning: the target as it is, or a saved or external checkpoint in its place.

``method=none`` runs the whole evaluation, suite and robustness battery without training anything.
With ``method.checkpoint=DIR`` the model in DIR is evaluated as the unlearned model while the
target stays the job's own target, so the target row is the real "before": a model kept by
``save_model=true`` (``<job dir>/model``, evaluated again under other settings or attacks), or one
that another framework unlearned. For another framework's pair, make its original model the
target (``model=hub model.name_or_path=ITS_TARGET target=base``) and its output the checkpoint.
DIR is a Hugging Face ``save_pretrained`` directory of the same base model (full weights) or a
LoRA adapter for the target (:func:`benchmarks.methods.load_saved`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from benchmarks.config import MethodConfig, knob
from benchmarks.methods import METHODS, Method, Unlearned, load_saved


@dataclass
class NoneConfig(MethodConfig):
    checkpoint: str | None = knob(
        None, "a saved or external model dir evaluated as the unlearned model (null: the target)"
    )


@METHODS.register("none")
class NoUnlearning(Method):
    config_class = NoneConfig
    search_space: ClassVar[dict[str, str]] = {}  # nothing to tune

    def unlearn(self, model, tokenizer, data, ctx) -> Unlearned:
        if self.cfg.checkpoint is None:
            return Unlearned(model, ctx.prompter, {"checkpoint": None})
        return load_saved(Path(self.cfg.checkpoint), model, ctx.prompter)
