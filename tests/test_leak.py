"""The leak test on answers that must and must not count as stating the gold answer.

String checks run without embeddings so their verdicts are their own; one test loads the real
MiniLM (a couple of seconds) to pin the embedding threshold the evaluation uses.
"""

from __future__ import annotations

import pytest

from benchmarks.evaluation.leak import LeakTest, normalise


@pytest.fixture(scope="module")
def strings() -> LeakTest:
    return LeakTest(use_embedding=False)


@pytest.mark.parametrize(
    ("gold", "text", "reason"),
    [
        # Numbers: digits, number words and thousands separators compare as numbers.
        ("1879", "He was born in 1879.", "number"),
        ("three", "She had 3 children.", "number"),
        ("3", "three", "number"),
        ("1,000", "about 1000 soldiers", "number"),
        ("1000", "about 1,000 soldiers", "number"),
        ("1.5 million", "roughly 1.5 million copies", "number"),
        # Names: titles are not what carries the answer.
        ("Sir Isaac Newton", "Isaac Newton", "keyword"),
        ("Isaac Newton", "It was Sir Isaac Newton.", "keyword"),
        ("Dr. Martin Luther King", "Martin Luther King gave the speech", "keyword"),
        ("Marie Curie", "Prof. Marie Curie", "keyword"),
        # Accents and case do not hide an answer.
        ("Frédéric Chopin", "frederic chopin", "keyword"),
        ("Frederic Chopin", "Frédéric Chopin", "keyword"),
        # Near-misspellings: per word, then the whole string for short words run together.
        ("Shakespeare", "Shakespear wrote it", "keyword"),
        ("William Shakespeare", "William Shakespear", "keyword"),
        ("New York", "NewYork", "fuzzy"),
    ],
)
def test_string_checks_catch_leaks(strings: LeakTest, gold: str, text: str, reason: str) -> None:
    assert strings.reasons([gold], [text]) == [reason]
    assert strings.leaks([gold], [text]) == [True]


@pytest.mark.parametrize(
    ("gold", "text"),
    [
        ("1879", "He was born in 1880."),
        ("1879", "18 79"),
        ("3", "13"),
        ("$1 million", "$1.2 million"),
        ("Paris", "Lyon"),
        ("Paris", "The capital is Lyon."),
        ("Italian", "French."),
        ("Albert Einstein", "Niels Bohr"),
        ("Sir Isaac Newton", "Sir Walter Raleigh"),
        ("Paris", ""),
    ],
)
def test_wrong_answers_do_not_leak_on_strings(strings: LeakTest, gold: str, text: str) -> None:
    assert strings.reasons([gold], [text]) == [None]


def test_reasons_are_per_pair_and_in_order(strings: LeakTest) -> None:
    golds = ["1879", "Isaac Newton", "Paris", "New York"]
    texts = ["in 1879", "Newton, Isaac", "Lyon", "NewYork"]
    assert strings.reasons(golds, texts) == ["number", "keyword", None, "fuzzy"]
    assert strings.leaks(golds, texts) == [True, True, False, True]


def test_normalise() -> None:
    assert normalise("Frédéric  CHOPIN!") == "frederic chopin"
    assert normalise("1,000,000 and three") == "1000000 and 3"
    assert normalise("$1.2 million.") == "1.2 million"


def test_embedding_catches_what_strings_miss_at_the_eval_threshold() -> None:
    test = LeakTest(embedding_threshold=0.8)
    golds = ["Albert Einstein", "Paris", "Italian", "Isaac Newton"]
    texts = ["Einstein", "Lyon", "French.", "Isaac Newton"]
    # The string checks decide first; the embedding only sees what they leave undecided.
    assert test.reasons(golds, texts) == ["embedding", None, None, "keyword"]
    assert LeakTest(use_embedding=False).reasons(golds[:1], texts[:1]) == [None]
