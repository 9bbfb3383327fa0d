"""What this machine can do at best, measured in the same process as the work it bounds.

Two floors, as a roofline: the matrix products of one forward at the model's layer shapes (FLOP/s,
the bound of training, scoring and prefill, where each weight serves many token rows), and a read
of a weight-sized buffer (bytes/s, the bound of a decoding step, where every weight is read for a
few rows). A forward of ``rows`` token rows then takes at least
``max(weight bytes / bandwidth, 2 · N · rows / FLOP/s)``. Both floors are plain torch on the
threads torch is given, so they bound what torch-based code can reach here, not what the silicon
could with hand-written kernels.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

#: CPU flags that give bf16 matrix products hardware support (else bf16 is emulated: no floor).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class ModelShape:
    """The matrix work of one token row through the model: the body's linear layers and the
    output layer, their weight shapes (in, out) with counts, and the bytes a forward reads."""

    body_params: int
    head_params: int
    shapes: dict[tuple[int, int], int]
    weight_bytes: int

    @property
    def params(self) -> int:
        return self.body_params + self.head_params


def model_shape(model: torch.nn.Module) -> ModelShape:
    """N counts the weights that multiply every token row: each linear layer of the body and the
    output layer (a tied output layer too; the input embedding is a lookup, not a product);
    attention's scores and biases are left out, as in the usual 2·N FLOPs per token."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    shapes: Counter[tuple[int, int]] = Counter()
    body = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            shapes[(module.in_features, module.out_features)] += 1
            body += module.weight.numel()
    head_params = head.weight.numel() if head is not None else 0
    if head is not None:
        shapes[(head.weight.shape[1], head.weight.shape[0])] += 1
    element = next(model.parameters()).element_size()
    return ModelShape(body, head_params, dict(shapes), (body + head_params) * element)


def _best(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm up: allocation, kernel choice
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops(
    shape: ModelShape, rows: int, dtype: torch.dtype = torch.float32, repeats: int = 3
) -> float:
    """FLOP/s of one forward's matrix products at the model's shapes, ``rows`` token rows each
    (one weight per distinct shape, multiplied as often as the model has it)."""
    generator = torch.Generator().manual_seed(0)
    weights = {
        (n_in, n_out): torch.randn(n_out, n_in, generator=generator).to(dtype)
        for n_in, n_out in shape.shapes
    }
    inputs = {n_in: torch.randn(rows, n_in, generator=generator).to(dtype) for n_in, _ in weights}

    def forward() -> None:
        for (n_in, n_out), count in shape.shapes.items():
            for _ in range(count):
                F.linear(inputs[n_in], weights[(n_in, n_out)])

    flops = 2 * rows * sum(n_in * n_out * count for (n_in, n_out), count in shape.shapes.items())
    return flops / _best(forward, repeats)


def read_bandwidth(nbytes: int, repeats: int = 5) -> float:
    """Bytes/s of summing an fp32 buffer of ``nbytes`` (a weight-sized read, too big to cache)."""
    buffer = torch.ones(max(1, nbytes // 4), dtype=torch.float32)
    return buffer.numel() * 4 / _best(buffer.sum, repeats)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def measure(shape: ModelShape, rows: int = 512) -> dict[str, Any]:
    """The floors for a model of this shape: fp32 (and bf16 where the CPU has it) matrix products
    at ``rows`` rows, and the weight-sized read."""
    flags = cpu_flags()
    floors: dict[str, Any] = {
        "matmul_rows": rows,
        "matmul_flops_fp32": matmul_flops(shape, rows),
        "read_bytes_per_s": read_bandwidth(shape.weight_bytes),
        "read_bytes": shape.weight_bytes,
        "bf16_flags": sorted(flags & set(BF16_FLAGS)),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
    }
    if floors["bf16_flags"]:
        floors["matmul_flops_bf16"] = matmul_flops(shape, rows, torch.bfloat16)
    return floors


def forward_floor_s(
    shape: ModelShape, rows: int, head_rows: int, grad: int, floors: dict[str, Any]
) -> float:
    """The least time one forward (and its backward, ``grad`` > 0) can take on this machine."""
    flops = (1 + grad) * 2 * (shape.body_params * rows + shape.head_params * head_rows)
    reads = (1 + grad) * shape.weight_bytes
    return max(reads / floors["read_bytes_per_s"], flops / floors["matmul_flops_fp32"])
