"""The package's shape (issue #25): no import cycles — function-level imports included, since a
cycle hidden inside a function still couples two modules both ways — and no stage importing
another stage (each stage is a command of its own: JSONL in → JSONL out)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "safekey"
# the stage packages: each reads files another stage wrote, never its code
STAGES = ("annotate", "datamaking", "train", "evals", "analyze")


def _module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """{module: modules it imports anywhere in its file} over the safekey package."""
    files = {_module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
                # `from pkg import sub` imports the submodule when there is one
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in files else stem for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # `import safekey.x.y` → the deepest module that exists
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("safekey"):
                    deps.add(t)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init_edge(a: str, b: str) -> bool:
    """A package's __init__ re-exporting its own submodules is not a cycle of meaning."""
    return b.startswith(a + ".")


def test_no_import_cycles_function_level_included():
    g = import_graph()
    assert len(g) > 100  # the walker saw the package
    pruned = {a: {b for b in bs if not _is_package_init_edge(a, b)} for a, bs in g.items()}
    assert cycles(pruned) == []


def test_the_walker_sees_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "safekey"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("x = 1\ndef f():\n    from . import a\n    return a\n")
    assert cycles(import_graph(pkg)) == [["safekey.a", "safekey.b"]]


def test_no_stage_imports_another_stage():
    bad = []
    for mod, deps in import_graph().items():
        own = mod.split(".")[1] if "." in mod else ""
        if own not in STAGES:
            continue
        bad += [f"{mod} → {d}" for d in deps if d.split(".")[1] in STAGES and d.split(".")[1] != own]
    assert bad == []


def test_help_names_every_training_mode_and_no_file_outside_the_repo(capsys):
    """#36: `safekey --help` and `train --help` name the four modes; no help or docstring points to a
    file that is not in the repository (the spec lives outside it)."""
    from pathlib import Path

    from cli_helpers import run_cli

    texts = [run_cli(args, capsys)[1] for args in (["--help"], ["train", "--help"], ["train", "run", "--help"])]
    for text in texts[:2]:
        flat = " ".join(text.split())
        assert all(m in flat for m in ("SFT", "SafeKey", "DPO", "GRPO")) or all(m in flat for m in ("sft", "safekey", "dpo", "grpo"))
    src = Path(__file__).resolve().parents[1] / "src" / "safekey"
    assert not [p for p in src.rglob("*.py") if "SPEC §" in p.read_text(encoding="utf-8")]
    assert not any("SPEC §" in t for t in texts)
