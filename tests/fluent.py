"""A tiny model with a notion of English, for tests of fluency (the local judge, the sanity check).

The tiny random model of the other tests is fluent at nothing, and its byte-level tokenizer would
need far more text than a test can afford to learn which words exist. This one has a word-level
vocabulary (every word of the embedded data, the test corpus and the test anchors) and is trained
for a few seconds on everyday English answers (``fixtures/english_chat.txt``): it learns which word
orders are English and no fact of the evaluation data, like a base model before the target
fine-tune. It is saved like a hub model, so a config can load it (``model=hub
model.name_or_path=DIR``).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from benchmarks.models import CHATML_TEMPLATE
from benchmarks.prompting import Prompter, encode_pair, pad_encoded
from benchmarks.training import mean_nll

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Everyday questions and fluent answers the model learns English from.
CORPUS = FIXTURES / "english_chat.txt"
#: The judge's fluency anchors for this model: fluent answers in the corpus's words, not in it.
ANCHORS = FIXTURES / "english_anchors.txt"
#: How the tokenizer splits words (``pre_tokenizers.Whitespace``'s pattern).
WORD = re.compile(r"\w+|[^\w\s]+")


def qa_lines(path: Path) -> list[tuple[str, str]]:
    """The ``question | answer`` lines of a file (``#`` lines are comments)."""
    lines = (line.strip() for line in path.read_text("utf-8").splitlines())
    return [tuple(line.split(" | ", 1)) for line in lines if line and not line.startswith("#")]


def _data_texts() -> list[str]:
    """Every string of the embedded data set, so its questions and answers have words."""
    raw = json.loads(resources.files("benchmarks.data").joinpath("wpu_mini.json").read_text())
    texts: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            texts.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(raw)
    return texts


def word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of ``texts``, with ChatML special tokens."""
    words = sorted({w for text in texts for w in WORD.findall(text)} | {"user", "assistant"})
    vocab = {word: i for i, word in enumerate(["[UNK]", *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    tokenizer.add_special_tokens(
        {"eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "pad_token": "<|pad|>"}
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def fluent_tiny(directory: Path, *, steps: int = 150, seed: int = 0) -> Path:
    """Train the tiny model on the corpus and save it with its tokenizer in ``directory``."""
    corpus = qa_lines(CORPUS)
    texts = [*_data_texts(), *(t for pair in corpus for t in pair)]
    texts += [t for pair in qa_lines(ANCHORS) for t in pair]
    tokenizer = word_tokenizer(texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        prompter = Prompter()
        batch = pad_encoded(
            [encode_pair(tokenizer, prompter(tokenizer, q), a) for q, a in corpus],
            tokenizer.pad_token_id,
        )
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            optimiser.zero_grad()
            mean_nll(model, batch).backward()
            optimiser.step()
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
