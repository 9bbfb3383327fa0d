"""The UnSTAR loop: generate anti-samples, fine-tune on them, probe, repeat for what still leaks.

1. q*: paraphrases of each forget question, generated and filtered;
2. ā: wrong answers that pass the leak test (fallback: answers of similar questions);
3. r: a misleading rationale for (q*, ā) that never states the true answer;
4. fine-tune (LoRA by default) on q* → "ā. r", with retain questions on their true answers;
5. probe every q*: a fact is unlearned when none of its questions leak; still-leaking questions,
   and harder rephrasings of the unlearned facts that still leak, make the next iteration.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from omegaconf import OmegaConf

from benchmarks.cache import atomic_write_text
from benchmarks.config import LeakConfig, MethodConfig, knob
from benchmarks.evaluation.generation import generate
from benchmarks.evaluation.leak import LeakTest
from benchmarks.evaluation.selection import stopping_rule
from benchmarks.methods import METHODS, Method, Unlearned, qa_pairs
from benchmarks.target import taught
from benchmarks.training import Pair, nll_loss, train
from unstar import prompts
from unstar.antisamples import AntiSample, AntiSampleGenerator, cached_initial

log = logging.getLogger(__name__)

#: The knobs that shape iteration-0 anti-samples; training knobs are left out of the cache key.
GENERATION_KEYS = (
    "generator", "paraphrase", "n_paraphrases", "max_paraphrases", "paraphrase_min_similarity",
    "include_original", "n_wrong", "max_wrong", "min_wrong", "filter", "rationale", "temperature", "leak",
)  # fmt: skip


@dataclass
class UnSTARConfig(MethodConfig):
    generator: str = knob(help="self (the model being unlearned), base, or a hub name / dir")
    paraphrase: bool = knob(help="generate paraphrased questions q*")
    n_paraphrases: int = knob(help="paraphrase candidates sampled per forget question", ge=0)
    max_paraphrases: int = knob(help="paraphrases kept per forget question", ge=0)
    paraphrase_min_similarity: float = knob(
        help="cosine to the question, subject masked", ge=-1, le=1
    )
    include_original: bool = knob(help="train on the original question too")
    n_wrong: int = knob(help="wrong-answer candidates sampled per question", ge=1)
    max_wrong: int = knob(help="wrong answers kept per question", ge=1)
    min_wrong: int = knob(help="fewer accepted: fall back to answers of similar questions", ge=0)
    filter: bool = knob(help="false: accept every candidate (ablation of the filters)")
    rationale: bool = knob(help="append a misleading rationale to the wrong answer")
    temperature: float = knob(help="sampling temperature of the candidates", gt=0)
    generation_batch_size: int = knob(help="prompts per generation batch", ge=1)
    leak: LeakConfig = knob(help="rejects candidates that state the true answer",
                            default_factory=LeakConfig)  # fmt: skip
    max_iterations: int = knob(help="train-probe rounds at most", ge=1)
    harder: bool = knob(help="the paper's step 4: harder rephrasings of unlearned facts")
    probe_max_new_tokens: int = knob(help="answer length when probing", ge=1)
    retain: bool = knob(help="reinforce retain questions with their true answers")


@METHODS.register("unstar")
class UnSTAR(Method):
    config_class = UnSTARConfig
    search_space: ClassVar[dict[str, str]] = {
        "method.lr": "tag(log, interval(1e-5, 1e-3))",
        "method.epochs": "range(1, 6)",
        "method.max_paraphrases": "range(0, 8)",
        "method.max_iterations": "range(1, 5)",
    }

    def unlearn(self, model, tokenizer, data, ctx) -> Unlearned:
        cfg = self.cfg
        leak_test = LeakTest.from_config(cfg.leak)
        self_taught = cfg.generator == "self"
        generator = AntiSampleGenerator(
            model if self_taught else self._load_generator(ctx), tokenizer, cfg, leak_test, ctx.seed
        )
        records = {r.id: r for r in data.forget}
        pool = taught(data)  # fallback wrong answers: never the holdout that MIA scores
        knobs = {k: OmegaConf.to_container(cfg, resolve=True)[k] for k in GENERATION_KEYS}
        key = (
            ctx.model_key if cfg.generator in ("self", "base") else cfg.generator,
            knobs,
            ctx.seed,
        )
        samples, report, reused = cached_initial(generator, data.forget, pool, ctx.cache_dir, key)
        retain = qa_pairs(data.retain, tokenizer, ctx.prompter) if cfg.retain else []
        # The loop always stops once its own probes are clean (the method); the shared rule
        # (method.stop_when_forgotten) also stops a training, and the loop, once the forget
        # questions and their selection paraphrases stop leaking, as it does for the baselines.
        stop = stopping_rule(cfg, data, tokenizer, ctx.prompter, ctx.eval_cfg)
        history: list[dict[str, Any]] = []
        all_samples, active = list(samples), samples
        trained: list[AntiSample] = []

        for iteration in range(1, cfg.max_iterations + 1):
            if not active:
                break
            trained += active
            pairs = [Pair(ctx.prompter(tokenizer, s.question), s.completion) for s in active]
            model, _ = train(
                model, tokenizer, pairs, retain, nll_loss, cfg, seed=ctx.seed + iteration,
                phase=f"unlearn/iter{iteration}", log_fn=ctx.log_fn, callbacks=[stop],
            )  # fmt: skip
            if self_taught:
                generator.model = model
            leaking = self._still_leaking(model, tokenizer, ctx, records, all_samples)
            done = [rid for rid in records if rid not in {s.record_id for s in leaking}]
            harder = self._harder(
                generator, model, tokenizer, ctx, records, done, all_samples, pool, iteration
            )
            all_samples += harder
            active = leaking + harder
            history.append(
                {"iteration": iteration, "trained_on": len(pairs), "unlearned": len(done),
                 "leaking_questions": len({s.question for s in leaking}),
                 "harder_leaking": len({s.question for s in harder})}
            )  # fmt: skip
            log.info(
                "UnSTAR iteration %d: %d/%d facts unlearned", iteration, len(done), len(records)
            )
            if stop.fired:
                break

        atomic_write_text(
            ctx.output_dir / "antisamples.jsonl",
            "".join(json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in all_samples),
        )
        return Unlearned(
            model,
            ctx.prompter,
            {
                "antisamples": len(all_samples),
                "antisamples_with_rationale": sum(s.rationale is not None for s in all_samples),
                "antisamples_cached": reused,
                "yield": report,
                "later_yield": generator.report.as_dict() if reused else None,
                "iterations": len(history),
                "per_iteration": history,
                "unlearned_facts": history[-1]["unlearned"] if history else 0,
                "forget_facts": len(records),
                "stopping": {
                    **stop.record(),
                    "loop": "until its probes are clean",
                    "max_iterations": cfg.max_iterations,
                    "loop_stopped_early": len(history) < cfg.max_iterations,
                },
            },
            wrong_answers=wrong_answers(trained),
        )

    def _load_generator(self, ctx):
        """Another model writes the anti-samples: ``base`` (the model before the target was taught
        the facts, which keeps its instruction following) or a hub name / local directory."""
        if self.cfg.generator == "base":
            return ctx.load_base()
        from benchmarks.models import load_model

        spec = OmegaConf.create({"source": "hub", "name_or_path": self.cfg.generator})
        return load_model(spec, ctx.cache_dir)[0]

    def _still_leaking(
        self, model, tokenizer, ctx, records, samples: list[AntiSample]
    ) -> list[AntiSample]:
        """The anti-samples whose question the current model still answers with the true fact."""
        by_question: dict[str, list[AntiSample]] = defaultdict(list)
        for sample in samples:
            by_question[sample.question].append(sample)
        questions = list(by_question)
        answers = generate(
            model, tokenizer, [ctx.prompter(tokenizer, q) for q in questions],
            max_new_tokens=self.cfg.probe_max_new_tokens, batch_size=self.cfg.generation_batch_size,
            desc="unstar: probe",
        )  # fmt: skip
        truths = [records[by_question[q][0].record_id].answer for q in questions]
        leaks = LeakTest.from_config(self.cfg.leak).leaks(truths, [a[0] for a in answers])
        return [s for q, leak in zip(questions, leaks, strict=True) if leak for s in by_question[q]]

    def _harder(
        self, generator, model, tokenizer, ctx, records, done, samples, pool, iteration
    ) -> list[AntiSample]:
        """Harder rephrasings of the unlearned facts that still leak (the paper's step 4)."""
        if not self.cfg.harder or not done:
            return []
        done_records = [records[rid] for rid in done]
        rephrased = generator.paraphrases(done_records, template=prompts.HARDER)
        known = {s.question for s in samples}
        by_record: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for record, questions in zip(done_records, rephrased, strict=True):
            by_record[record.id] += [(q, "harder") for q in questions if q not in known]
        candidates = [r for r in done_records if by_record[r.id]]
        fresh = generator.build(candidates, [by_record[r.id] for r in candidates], pool, iteration)
        return self._still_leaking(model, tokenizer, ctx, records, fresh)


def wrong_answers(samples: list[AntiSample]) -> dict[str, list[str]]:
    """The distinct wrong answers of the samples per forget record, in the order first trained
    (the last iteration's harder rephrasings, never trained on, are not passed here)."""
    found: dict[str, dict[str, None]] = defaultdict(dict)
    for sample in samples:
        found[sample.record_id][sample.wrong_answer] = None
    return {record_id: list(answers) for record_id, answers in found.items()}
