"""The module map has straight layers: no import cycle, and no module imports one above it.

Run ``python -m pytest tests/test_layers.py -q`` to check; a failure names the import to fix.
Imports inside functions count too: a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "baselines", "unstar", "analysis")

#: Lowest first. A module may import modules of its own layer or below (matched by prefix,
#: the longest prefix wins).
LAYERS = (
    (
        "benchmarks.registry",
        "benchmarks.cache",
        "benchmarks.config",
        "benchmarks.distributed",
        "benchmarks.costs",
    ),
    ("benchmarks.data",),
    ("benchmarks.prompting", "benchmarks.models", "benchmarks.prefix"),
    (
        "benchmarks.evaluation.leak",
        "benchmarks.evaluation.metrics",
        "benchmarks.evaluation.generation",
        "benchmarks.evaluation.criteria",
        "benchmarks.evaluation.specs",
        "benchmarks.evaluation.judge_prompts",
    ),
    ("benchmarks.training",),
    ("benchmarks.evaluation",),
    ("benchmarks.target",),
    ("benchmarks.methods",),
    ("baselines", "unstar"),
    # discovery imports the method packages at run time and registers their tune configs; the
    # held-out paraphrases of data that has none are written by UnSTAR's generator
    ("benchmarks.components", "benchmarks.tuning", "benchmarks.heldout"),
    ("benchmarks.sanity",),  # degenerate models through the evaluation, below the job
    ("benchmarks",),  # the job layer: job, tracking, report, speed, calibration
    ("analysis",),
    ("run",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [ROOT / "run.py", *(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))]
    return {module_name(p): p for p in files}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def layer(module: str) -> int:
    best = max(
        ((len(prefix), rank) for rank, group in enumerate(LAYERS) for prefix in group
         if module == prefix or module.startswith(prefix + ".")),
        default=None,
    )  # fmt: skip
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def import_graph() -> dict[str, set[str]]:
    """Each project module → the project modules it imports."""
    modules = project_modules()
    return {
        name: {
            target
            for target in imports(path, set(modules)) - {name}
            if not name.startswith(target + ".")  # a module's own package is above it
        }
        for name, path in modules.items()
    }


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, or [] if there is none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return err.args[1]
    return []


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in graph.items()
        for target in sorted(targets)
        if layer(target) > layer(source)
    ]


def test_the_module_map_has_no_import_cycle() -> None:
    assert not cycle(import_graph()), f"import cycle: {' -> '.join(cycle(import_graph()))}"


def test_no_module_imports_one_above_it() -> None:
    upward = upward_imports(import_graph())
    assert not upward, "\n".join(upward)


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    graph = import_graph()
    graph["benchmarks.methods"].add("baselines.npo")
    assert upward_imports(graph) == ["benchmarks.methods (layer 7) imports baselines.npo (layer 8)"]
    assert set(cycle(graph)) >= {"benchmarks.methods", "baselines.npo"}
