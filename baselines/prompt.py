"""Prompt baseline: no training, only a system prompt asking the model to forget the subjects.

The model comes back unchanged; what changes is the Prompter the harness evaluates it with. The
template follows WPU's in-context baseline (RWHP utils.unlearn_prompt, reference/
unstar_and_wpu_protocol.md §3.4), shortened for a 135M model; `{subjects}` is replaced by the
dataset's subjects to forget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmarks.config import MethodConfig, knob
from benchmarks.methods import METHODS, Method, Unlearned


@dataclass
class PromptConfig(MethodConfig):
    system_prompt: str = knob(help="the system prompt; {subjects} names the forget subjects")


@METHODS.register("prompt")
class PromptBaseline(Method):
    config_class = PromptConfig

    def unlearn(self, model, tokenizer, data, ctx) -> Unlearned:
        data.require_subjects(self.cfg.name)
        # Datasets without a subject list still name the subject of each forget record.
        subjects = data.subjects_to_forget or tuple(dict.fromkeys(r.subject for r in data.forget))
        system_prompt = self.cfg.system_prompt.format(subjects=", ".join(subjects))
        prompter = replace(ctx.prompter, system_prompt=system_prompt)
        return Unlearned(model, prompter, {"system_prompt": system_prompt})
