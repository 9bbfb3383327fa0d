"""Judges: refusal detection, repetition, reply parsing, and the OpenAI-compatible judge against a
real HTTP server on 127.0.0.1 (time-outs and malformed replies included)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from benchmarks.evaluation.generation import answer_logprobs
from benchmarks.evaluation.judges import (
    Judged,
    JudgeEnv,
    JudgeError,
    RefusalDetector,
    build_judge,
    parse_score,
    replace_name,
    rescale,
    unique_ngram_ratio,
)
from benchmarks.evaluation.leak import LeakTest
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


# -- the local judge ---------------------------------------------------------------------------


def test_local_judge_scores(make_cfg: Callable[..., DictConfig]) -> None:
    model, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    env = JudgeEnv(LeakTest(use_embedding=False), tokenizer, lambda: model, Prompter(), 4)
    cfg = OmegaConf.create({"kind": "local", "refusal": {"threshold": 0.5, "use_embedding": False}})
    judge = build_judge(cfg, env)
    items = [
        Judged("Where was Albert Einstein born?", "Ulm", "He was born in Ulm.", "Albert Einstein"),
        Judged("Where was Albert Einstein born?", "Ulm", "I don't know.", "Albert Einstein"),
        Judged("Where was Albert Einstein born?", "Ulm", "", "Albert Einstein"),
    ]
    assert judge.privacy(items) == [0.0, 1.0, 1.0]
    assert judge.rejects(items) == [False, True, False]

    quality = judge.quality(items, forgotten=True)
    prompt = Prompter()(tokenizer, items[0].question)
    lp = answer_logprobs(model, tokenizer, [prompt], [items[0].response])[0]
    fluency = float(np.exp(np.mean(lp[:-1])))  # per-token probability, end-of-turn left out
    assert quality[0] == pytest.approx(2 / (1 / 1.0 + 1 / fluency))  # no repeated 4-gram
    assert quality[1] == 1.0  # a refusal is appropriate, however unlikely to the original model
    assert quality[2] == 0.0  # an empty response is not an answer
    looping = Judged(items[0].question, "Ulm", "I don't know. " * 4, "Albert Einstein")
    assert judge.quality([looping], forgotten=True)[0] < 0.5  # repetition still counts


# -- the OpenAI-compatible judge over HTTP -----------------------------------------------------


STATUS = {"busy": 503, "rate_limited": 429, "bad_request": 400, "unauthorized": 401}


class FakeJudgeServer:
    """A chat-completions endpoint on 127.0.0.1 that answers by the rubric it is sent.

    ``mode``: ``ok``; ``slow`` (sleeps past the client's time-out); ``malformed`` (a reply with no
    rating); ``not_json``; ``no_choices`` (JSON, but not a chat completion); an HTTP error of
    :data:`STATUS` (``busy`` 503, ``rate_limited`` 429, ``bad_request``, ``unauthorized``), with a
    Retry-After of 1 ms so that the client's retries take no time. ``fail_after`` switches to
    ``mode`` after that many good replies, for ``failures`` requests (``None``: for good).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode, self.fail_after, self.failures = "ok", 0, None
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
                    {"choices": [{"message": {"role": "assistant", "content": reply(body, mode)}}]}
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


def reply(body: dict[str, Any], mode: str) -> str:
    """Privacy 3 unless the response says 'Ulm'; quality 2; class 2 for 'know' in the response."""
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
