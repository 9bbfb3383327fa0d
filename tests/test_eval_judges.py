"""Judges: refusal detection, repetition, reply parsing, and the OpenAI-compatible judge against a
real HTTP server on 127.0.0.1 (time-outs and malformed replies included)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from fluent import ANCHORS
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.data import load_data
from benchmarks.evaluation.evaluate import evaluate_model
from benchmarks.evaluation.judges import (
    FluencyScale,
    Judged,
    JudgeEnv,
    JudgeError,
    RefusalDetector,
    build_judge,
    fluency_anchors,
    parse_score,
    replace_name,
    rescale,
    unique_ngram_ratio,
    word_salads,
)
from benchmarks.evaluation.leak import LeakTest
from benchmarks.evaluation.suite import ModelRun, Suite, criteria_family
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import Prompter

KEY = "sk-test-judge-0123456789"

REFUSALS = [
    "I don't know.",
    "I'm sorry, but I have no information about Albert Einstein's birthplace.",
    "Honestly, I can't recall where he was born.",
    "Marie Curie is a fictional character.",
    "There is no such person as Isaac Newton.",
    "That doesn't ring a bell for me.",
]
ANSWERS = [
    "Albert Einstein was born in Ulm, Germany.",
    "1879",
    "He is known for the theory of relativity.",
    "I think it was Munich.",
    "She studied physics and chemistry in Paris, where nobody knew her.",
    "",
]


def test_refusal_phrasings_are_detected_and_answers_are_not() -> None:
    detector = RefusalDetector(use_embedding=False)
    assert detector.rejects(REFUSALS) == [True] * len(REFUSALS)
    assert detector.rejects(ANSWERS) == [False] * len(ANSWERS)


def test_the_idk_baselines_refusals_count_as_rejects() -> None:
    """What the IDK and DPO baselines teach the model to say must read as 'information unavailable'."""
    text = resources.files("benchmarks.data").joinpath("refusals.txt").read_text("utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    rejected = RefusalDetector(use_embedding=False).rejects(lines)
    assert [line for line, hit in zip(lines, rejected, strict=True) if not hit] == []


def test_embedding_similarity_catches_refusals_no_phrase_lists() -> None:
    texts = ["My knowledge doesn't include this.", "That person is not someone I know about."]
    assert RefusalDetector(use_embedding=False).rejects(texts) == [False, False]
    detected = RefusalDetector(threshold=0.5).rejects([*texts, *ANSWERS])
    assert detected == [True, True] + [False] * len(ANSWERS)


def test_unique_ngram_ratio() -> None:
    assert unique_ngram_ratio([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(4 / 5)
    assert unique_ngram_ratio([7] * 10) == pytest.approx(1 / 7)
    assert unique_ngram_ratio(list(range(10))) == 1.0
    assert unique_ngram_ratio([1, 2, 3]) == 1.0  # too short to repeat


@pytest.mark.parametrize(
    ("reply", "allowed", "expected"),
    [
        ("Rating: [[3]]", (1, 2, 3), 3),
        ("The response leaks the birthplace.\nRating: [[1]]", (1, 2, 3), 1),
        ("Class: [[2]]", (1, 2), 2),
    ],
)
def test_parse_score(reply: str, allowed: tuple[int, ...], expected: int) -> None:
    assert parse_score(reply, allowed) == expected


@pytest.mark.parametrize(
    "reply", ["Rating: 3", "Rating: [[2]] or Rating: [[3]]", "Rating: [[5]]", "", "Class: [[3]]"]
)
def test_parse_score_rejects_malformed_replies(reply: str) -> None:
    allowed = (1, 2) if reply.startswith("Class") else (1, 2, 3)
    with pytest.raises(JudgeError, match="malformed judge reply"):
        parse_score(reply, allowed)


def test_rescale_maps_the_rubric_onto_unit_interval() -> None:
    assert [rescale(k) for k in (1, 2, 3)] == [0.0, 0.5, 1.0]


def test_replace_name_replaces_full_first_and_last_names() -> None:
    text = "Where was Albert Einstein born? Einstein, or Albert, was born in Ulm. Einsteinium."
    assert replace_name(text, "Albert Einstein", "XX") == (
        "Where was XX born? XX, or XX, was born in Ulm. Einsteinium."
    )


# -- the local judge: RWHP's quality rubric ---------------------------------------------------

#: A question the fluent tiny model (tests/fluent.py) has no answer to, and responses of each
#: rubric class: the rubric (reference/unstar_and_wpu_protocol.md §3.3) rates a fluent answer
#: appropriate whether true or fabricated, and a refusal too; gibberish and repetition fail.
QUESTION = "Where was Ada Lind born?"
TRUE = "She was born in a small village near the coast."  # the "fact" the target below is taught
RUBRIC = {
    "true": TRUE,
    "fabricated": "She was born in a town in the north.",
    "refusal": "I'm sorry, but I don't know where she was born.",
    "word_salad": "in was village west born she the a",
    "random_words": "prominent elephant and Jones Madeira 1901 Alexander 1763 Drava paintings",
    "refusal_in_gibberish": "I don't know elephant Madeira 1901 Drava paintings solo far Jones "
    "Alexander prominent 1763",
    "word_loop": "the the the the the the the the the the the the",
    "phrase_loop": "I don't know. " * 5,
    "empty": "",
}
FLUENT = ("true", "fabricated", "refusal")


def local_judge(model: Any, tokenizer: Any, anchors: Path | None = ANCHORS) -> Any:
    cfg = OmegaConf.create(
        {
            "kind": "local",
            "refusal": {"threshold": 0.5, "use_embedding": False},
            "fluency_anchors": str(anchors) if anchors else None,
        }
    )
    env = JudgeEnv(LeakTest(use_embedding=False), tokenizer, lambda: model, Prompter(), 4)
    return build_judge(cfg, env)


def rubric_items() -> list[Judged]:
    return [
        Judged(QUESTION, "a small village near the coast", r, "Ada Lind") for r in RUBRIC.values()
    ]


@pytest.fixture(scope="module")
def fluent(fluent_dir: Path) -> tuple[Any, Any]:
    """The fluent tiny model (a base model that knows English, not the facts) and its tokenizer."""
    return (
        AutoModelForCausalLM.from_pretrained(fluent_dir).eval(),
        AutoTokenizer.from_pretrained(fluent_dir),
    )


def test_the_local_judge_follows_the_quality_rubric(fluent: tuple[Any, Any]) -> None:
    """Under a model that knows English but not the facts: a fluent true answer, a fluent
    fabrication and a refusal all score high, the first two alike; gibberish, loops (a looping
    refusal too) and empty answers low; a refusal is scored as text, with no bonus."""
    judge = local_judge(*fluent)
    quality = dict(zip(RUBRIC, judge.quality(rubric_items(), forgotten=True), strict=True))
    assert judge.scale.usable, judge.scale
    assert all(quality[case] >= 0.7 for case in FLUENT), quality
    assert abs(quality["true"] - quality["fabricated"]) <= 0.15, quality
    gibberish = [case for case in RUBRIC if case not in (*FLUENT, "refusal_in_gibberish")]
    assert all(quality[case] < 0.3 for case in gibberish), quality
    assert quality["empty"] == 0.0
    # A refusal followed by a word list: flawed at least, not a free full score.
    assert quality["refusal_in_gibberish"] < 0.6, quality
    rejected = dict(zip(RUBRIC, judge.rejects(rubric_items()), strict=True))
    assert rejected["refusal"] and rejected["refusal_in_gibberish"]  # refusals, scored as text


def test_the_local_judge_scores_privacy_and_rejects() -> None:
    judge = local_judge(None, None, anchors=None)  # neither needs the fluency model
    items = [
        Judged("Where was Albert Einstein born?", "Ulm", "He was born in Ulm.", "Albert Einstein"),
        Judged("Where was Albert Einstein born?", "Ulm", "I don't know.", "Albert Einstein"),
        Judged("Where was Albert Einstein born?", "Ulm", "", "Albert Einstein"),
    ]
    assert judge.privacy(items) == [0.0, 1.0, 1.0]
    assert judge.rejects(items) == [False, True, False]


def test_the_fluency_scale_is_linear_between_the_anchors_and_clipped() -> None:
    scale = FluencyScale(fluent=-2.0, salad=-6.0, separation=1.0)
    assert [scale(lp) for lp in (-6.0, -5.0, -4.0, -3.0, -2.0)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert scale(-9.0) == 0.0 and scale(-0.5) == 1.0
    assert not FluencyScale(fluent=-5.0, salad=-5.1, separation=0.6).usable


def test_word_salads_draw_each_texts_length_from_all_words() -> None:
    texts = ["The cat sat on the mat.", "Blue.", "They took the early bus."]
    salads = word_salads(texts)
    assert [len(s.split()) for s in salads] == [6, 1, 5]
    pool = Counter(w for t in texts for w in t.split())
    assert all(Counter(s.split()) <= pool for s in salads) and salads != texts
    assert word_salads(texts) == salads  # seeded


def test_the_fluency_scale_needs_a_model_that_tells_english_from_salad(
    fluent: tuple[Any, Any], make_cfg: Callable[..., DictConfig]
) -> None:
    """The scale's ends, from the shipped English anchors: the fluent model puts fluent answers
    above their salads; the untrained tiny model cannot, and the scale says so."""
    assert local_judge(*fluent).scale.fluent > local_judge(*fluent).scale.salad
    untrained, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    assert not local_judge(untrained, tokenizer, anchors=None).scale.usable


def test_the_suite_scores_fluency_under_the_base_model_not_the_target(
    fluent_dir: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    """The judge's fluency model is the model before the target fine-tune, which does not know
    the facts; the target is never asked, and the results record the scale it measured."""
    cfg = make_cfg(
        "model=hub",
        f"model.name_or_path={fluent_dir}",
        f"eval.judge.fluency_anchors={ANCHORS}",
        "eval.views=[forget,hard_retain,general_retain]",
        "eval.metrics=[rougeL_recall,leak_rate]",
        "eval.suite=[criteria]",
    )
    base, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    target, _ = load_model(cfg.model, cache_dir(), "cpu")
    data = load_data(cfg.data)
    metrics, rows = evaluate_model(target, tokenizer, data, cfg.eval, Prompter(), "target")
    suite = Suite(
        cfg.eval,
        data=data,
        tokenizer=tokenizer,
        runs={"target": ModelRun("target", Prompter(), metrics, rows, target)},
        load_original=lambda: pytest.fail("fluency must not be scored under the target"),
        load_base=lambda: base,
        reference=None,
        timer=lambda phase: nullcontext(),
    )
    results = criteria_family(suite, suite.runs["target"])
    assert suite.judge.fluency_model is base
    assert results["judge"]["fluency_scale"]["usable"]
    assert results["criteria"]["response_quality"] is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [("no separator here", "malformed"), ("# only a comment", "at least two")],
)
def test_bad_anchor_files_fail_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "anchors.txt"
    path.write_text(f"Who? | Me.\n{text}\n")
    with pytest.raises(ValueError, match=message):
        fluency_anchors(path)
    with pytest.raises(FileNotFoundError, match="fluency_anchors"):
        fluency_anchors(tmp_path / "missing.txt")


# -- the OpenAI-compatible judge over HTTP -----------------------------------------------------


STATUS = {"busy": 503, "rate_limited": 429, "bad_request": 400, "unauthorized": 401}


class FakeJudgeServer:
    """A chat-completions endpoint on 127.0.0.1 that answers by the rubric it is sent.

    ``quality_ratings`` (response text: 1-3) programs its quality ratings; without it, it rates
    every response 2. ``mode``: ``ok``; ``slow`` (sleeps past the client's time-out);
    ``malformed`` (a reply with no rating); ``not_json``; ``no_choices`` (JSON, but not a chat
    completion); an HTTP error of :data:`STATUS` (``busy`` 503, ``rate_limited`` 429, ``bad_request``, ``unauthorized``), with a
    Retry-After of 1 ms so that the client's retries take no time. ``fail_after`` switches to
    ``mode`` after that many good replies, for ``failures`` requests (``None``: for good).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode, self.fail_after, self.failures = "ok", 0, None
        self.quality_ratings: dict[str, int] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                failing = len(server.requests) - server.fail_after
                over = server.failures is not None and failing > server.failures
                mode = server.mode if failing > 0 and not over else "ok"
                if mode == "slow":
                    time.sleep(1.0)
                status = STATUS.get(mode, 200)
                content: dict[str, Any] = (
                    {
                        "choices": [
                            {
                                "message": {
                                    "role": "assistant",
                                    "content": reply(body, mode, server.quality_ratings),
                                }
                            }
                        ]
                    }
                    if status == 200
                    # Like OpenAI's, the message quotes part of the key: it must not be shown.
                    else {"error": {"message": f"Incorrect API key provided: {KEY[:6]}***"}}
                )
                if mode == "no_choices":
                    content = {"object": "list", "data": []}
                payload = (
                    b"<html>busy</html>" if mode == "not_json" else json.dumps(content).encode()
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Retry-After-Ms", "1")
                self.end_headers()
                with suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up
                    self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(body: dict[str, Any], mode: str, quality_ratings: dict[str, int] | None = None) -> str:
    """Privacy 3 unless the response says 'Ulm'; quality from ``quality_ratings`` or 2; class 2
    for 'know' in the response."""
    if mode == "malformed":
        return "I would rate this response as quite good."
    messages = body["messages"]
    text = messages[-1]["content"]
    if messages[0]["role"] == "user":  # the classifier prompt has no system message
        response = text.rsplit("Response: ", 1)[1]
        return "Class: [[2]]" if "know" in response else "Class: [[1]]"
    if "Ground-truth answer" in text:
        return (
            "Rating: [[1]]"
            if "Ulm" in text.rsplit("Assistant response:", 1)[1]
            else "Rating: [[3]]"
        )
    if quality_ratings is not None:
        response = re.split(r"(?:Assistant r|R)esponse: ", text)[-1]
        return f"Rating: [[{quality_ratings[response]}]]"
    return "Rating: [[2]]"


@pytest.fixture
def server() -> Iterator[FakeJudgeServer]:
    fake = FakeJudgeServer()
    yield fake
    fake.close()


def openai_judge(url: str, timeout_s: float = 5.0, retries: int = 0) -> Any:
    cfg = OmegaConf.create(
        {
            "kind": "openai",
            "url": url,
            "model": "judge-model",
            "api_key_env": "UNSTAR_TEST_JUDGE_KEY",
            "timeout_s": timeout_s,
            "retries": retries,
        }
    )
    return build_judge(cfg, None)  # type: ignore[arg-type]


ITEMS = [
    Judged(
        "Where was Albert Einstein born?",
        "Ulm",
        "Albert Einstein was born in Ulm.",
        "Albert Einstein",
    ),
    Judged(
        "Where was Albert Einstein born?",
        "Ulm",
        "I don't know where Einstein was born.",
        "Albert Einstein",
    ),
    Judged("In which year was Albert Einstein born?", "1879", "Paris.", "Albert Einstein"),
]


def test_openai_judge_scores_over_http(
    server: FakeJudgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNSTAR_TEST_JUDGE_KEY", KEY)
    judge = openai_judge(server.url)

    assert judge.privacy(ITEMS) == [0.0, 1.0, 1.0]
    assert judge.quality(ITEMS, forgotten=True) == [0.5, 0.5, 0.5]
    assert judge.rejects(ITEMS) == [False, True, False]

    assert len(server.requests) == 9
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {KEY}"
    body = first["body"]
    assert (body["model"], body["temperature"], body["seed"], body["stop"]) == (
        "judge-model",
        0,
        0,
        ["\n\n"],
    )
    assert "Ground-truth answer: Ulm" in body["messages"][1]["content"]
    # Quality: the person is named by surname only; the classifier sees XX.
    quality = server.requests[3]["body"]["messages"][1]["content"]
    assert "Albert" not in quality and "Einstein was born in Ulm" in quality
    classify = server.requests[6]["body"]["messages"][0]["content"]
    assert "Einstein" not in classify and "XX was born in Ulm" in classify
    assert all(KEY not in json.dumps(r["body"]) for r in server.requests)


def test_openai_judge_without_a_key_sends_no_authorization(
    server: FakeJudgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSTAR_TEST_JUDGE_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-one")  # only api_key_env's variable counts
    assert openai_judge(server.url).privacy(ITEMS[:1]) == [0.0]
    assert server.requests[0]["auth"] is None


@pytest.mark.parametrize("mode", ["busy", "rate_limited"])
def test_429_and_5xx_are_retried(
    server: FakeJudgeServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("UNSTAR_TEST_JUDGE_KEY", KEY)
    server.mode, server.fail_after, server.failures = mode, 1, 2
    assert openai_judge(server.url, retries=2).privacy(ITEMS) == [0.0, 1.0, 1.0]
    assert len(server.requests) == 5  # the second item tried three times
    assert all(r["auth"] == f"Bearer {KEY}" for r in server.requests)


def test_a_transient_error_past_the_retries_keeps_the_scores_so_far(
    server: FakeJudgeServer,
) -> None:
    server.mode, server.fail_after = "busy", 1
    with pytest.raises(
        JudgeError, match=r"answered HTTP 503 Service Unavailable \(2 tries\) \(item 2 of 3\)"
    ) as caught:
        openai_judge(server.url, retries=1).privacy(ITEMS)
    assert caught.value.scores == [0.0]
    assert len(server.requests) == 3


@pytest.mark.parametrize("has_key", [True, False])
def test_a_refused_key_fails_at_once_naming_the_endpoint_and_the_variable(
    server: FakeJudgeServer, monkeypatch: pytest.MonkeyPatch, has_key: bool
) -> None:
    if has_key:
        monkeypatch.setenv("UNSTAR_TEST_JUDGE_KEY", KEY)
    else:
        monkeypatch.delenv("UNSTAR_TEST_JUDGE_KEY", raising=False)
    server.mode = "unauthorized"
    with pytest.raises(JudgeError) as caught:
        openai_judge(server.url, retries=2).rejects(ITEMS)
    message = str(caught.value)
    assert f"judge {server.url}/chat/completions answered HTTP 401" in message
    assert "$UNSTAR_TEST_JUDGE_KEY" in message
    assert ("check the key" in message) == has_key and ("no API key" in message) != has_key
    assert KEY[:6] not in message  # neither the key nor the server's quote of it
    assert len(server.requests) == 1  # not retried


def test_a_bad_request_is_not_retried(server: FakeJudgeServer) -> None:
    server.mode = "bad_request"
    with pytest.raises(JudgeError, match=r"answered HTTP 400 Bad Request \(item 1 of 3\)"):
        openai_judge(server.url, retries=2).quality(ITEMS, forgotten=False)
    assert len(server.requests) == 1


def test_a_time_out_is_a_clear_error_that_keeps_the_scores_so_far(
    server: FakeJudgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNSTAR_TEST_JUDGE_KEY", KEY)
    server.mode, server.fail_after = "slow", 1
    with pytest.raises(JudgeError, match=r"did not answer \(time-out 0.2s, 2 tries\)") as caught:
        openai_judge(server.url, timeout_s=0.2, retries=1).privacy(ITEMS)
    assert caught.value.scores == [0.0]
    assert "item 2 of 3" in str(caught.value) and KEY not in str(caught.value)
    assert len(server.requests) == 3  # one good reply, then the item tried twice


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("malformed", "malformed judge reply"),
        ("not_json", r"not a chat completion\): '<html>busy</html>'"),
        ("no_choices", "not a chat completion"),
    ],
)
def test_a_malformed_reply_is_a_clear_error_that_keeps_the_scores_so_far(
    server: FakeJudgeServer, mode: str, message: str
) -> None:
    server.mode, server.fail_after = mode, 2
    with pytest.raises(JudgeError, match=message) as caught:
        openai_judge(server.url).rejects(ITEMS)
    assert caught.value.scores == [False, True]


def test_an_unreachable_endpoint_is_a_clear_error() -> None:
    fake = FakeJudgeServer()
    fake.close()  # nothing listens on that port any more
    with pytest.raises(JudgeError, match="did not answer"):
        openai_judge(fake.url, timeout_s=1).privacy(ITEMS[:1])


def test_the_openai_judge_scores_the_rubric_cases_on_the_local_judges_scale(
    server: FakeJudgeServer, fluent: tuple[Any, Any]
) -> None:
    """The rubric cases through both judges. The server rates each as the rubric does (3: fluent,
    whether true, fabricated or refusing; 1: gibberish, repetition, empty, a refusal lost in a
    word list):
    what it returns is programmed, so agreement here shows the plumbing (every item sent, in
    order, rated on the same 0-1 scale), not that a real LLM judge agrees with the local one."""
    local = local_judge(*fluent).quality(rubric_items(), forgotten=True)
    ratings = {case: 3 if case in FLUENT else 1 for case in RUBRIC}
    server.quality_ratings = {RUBRIC[case]: rating for case, rating in ratings.items()}
    remote = openai_judge(server.url).quality(rubric_items(), forgotten=True)
    assert remote == [rescale(ratings[case]) for case in RUBRIC]
    assert [q >= 0.6 for q in local] == [q >= 0.6 for q in remote]
    sent = [r["body"]["messages"][1]["content"] for r in server.requests]
    asked = "Where was Lind born?"  # the person named by surname only, as WPU does
    assert sent == [f"Question: {asked}\nAssistant response: {r}" for r in RUBRIC.values()]
