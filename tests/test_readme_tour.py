"""The README cannot rot (issue #24 D11): every `safekey …` line of its code blocks names a command
that exists and only options that command has; every `safekey run … --dry-run` line runs; the
statements that were found wrong once stay right."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest
from cli_helpers import run_cli

from safekey.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "gpu.md", ROOT / "docs" / "cli.md", ROOT / "CONTRIBUTING.md"]


def _command_lines(text: str) -> list[str]:
    """`safekey …` lines of the ```bash blocks, continuations joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"\s*(?:&&|;)\s*", line):
                part = re.sub(r"^(?:\w+=\S+\s+)+", "", part.strip())  # leading VAR=value
                if part.startswith("safekey "):
                    out.append(part)
    return out


LINES = [(doc.name, line) for doc in DOCS if doc.exists() for line in _command_lines(doc.read_text(encoding="utf-8"))]


def _resolve(tokens: list[str]) -> tuple[click.Command, list[str]]:
    cmd: click.Command = cli
    rest = tokens[1:]
    ctx = click.Context(cli)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} under {cmd.name!r}"
        cmd, rest = sub, rest[1:]
    return cmd, rest


def test_the_tour_has_lines():
    assert len(LINES) > 30, LINES


@pytest.mark.parametrize("doc, line", LINES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(LINES)])
def test_every_command_and_option_exists(doc, line):
    tokens = shlex.split(line)
    cmd, rest = _resolve(tokens)
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h", "--version"}
    for t in rest:
        if t.startswith("-") and t != "-" and not re.fullmatch(r"-\d+(\.\d+)?", t):
            assert t.split("=", 1)[0] in known, f"{doc}: `{line}` uses {t}, which `{cmd.name}` does not have"


DRY = [(d, line) for d, line in LINES if line.startswith("safekey run ") and "--dry-run" in line]


@pytest.mark.parametrize("doc, line", DRY)
def test_dry_run_lines_run(doc, line, capsys, tmp_path):
    code, text = run_cli(shlex.split(line)[1:] + ["-o", str(tmp_path / "o")], capsys)
    # the plan and every stage config are printed; a check that finds an error (a paper preset on a
    # machine without its GPUs, vLLM or hub) makes the dry run exit 2, saying how many (#36)
    assert "[1/" in text and "(written when the run starts)" in text, text
    errors = text.count("check: error:")
    assert (code, bool(errors)) in ((0, False), (2, True)), text
    assert not errors or f"dry run: {errors} check(s) found an error" in text


def test_statements_found_wrong_once_stay_right():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--baseline eval-base" not in readme  # labels drop the eval- prefix
    assert "ShieldGemma is not supported" not in readme + (ROOT / "docs" / "gpu.md").read_text(encoding="utf-8")
    assert "SPEC §" not in readme  # the spec is not in this repository
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert len(quick.strip().splitlines()) <= 40
    for name in ("keyword", "llama-guard", "shieldgemma", "qwen3guard", "wildguard", "harm-1to5"):
        assert name in quick
    from safekey.cli.eval_safety import safety

    judge_help = next(p.help for p in safety.params if p.name == "judge")
    from safekey.judges import judge_registry

    for name in judge_registry()[0]:  # the help is generated from the registry
        assert name in judge_help, name
    assert not (ROOT / "configs" / "accelerate" / "cpu_2proc.yaml").exists()
    for cfg in (ROOT / "configs").rglob("*.yaml"):
        for ref in re.findall(r"configs/[\w./-]+", cfg.read_text()):
            assert (ROOT / ref).exists(), f"{cfg.name} points to missing {ref}"


def _tour_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## CLI tour\n.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_the_tour_runs_as_written(tmp_path, capsys, monkeypatch):
    """#36.4: every line of the README's tour runs to completion on CPU, as written (only its output
    folder moved into tmp), in order — each line reads what the one before it wrote. In-process
    (the CLI's own entry point, run from the repository root): the lines' cost, not Python's start-up."""
    import time

    lines = _tour_lines()
    assert len(lines) >= 8 and all(ln.startswith("safekey ") for ln in lines)
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    took = []
    for line in lines:
        argv = [a.replace("runs/tour", str(tmp_path / "tour")) for a in shlex.split(line)[1:]]
        if argv[:1] == ["run"]:
            argv += ["-o", str(tmp_path / "plan")]
        t0 = time.time()
        code, text = run_cli(argv, capsys)
        took.append(round(time.time() - t0, 1))
        assert code == 0 and "Traceback" not in text, f"`{line}` exited {code}:\n{text[-2000:]}"
    assert (tmp_path / "tour" / "sk" / "train_stats.json").exists() and (tmp_path / "tour" / "grpo" / "train_stats.json").exists()
    s = json.loads((tmp_path / "tour" / "eval-att" / "summary.json").read_text())
    assert {"heldout_harmful", "heldout_harmful@prefill-thinking"} <= set(s["benchmarks"])
    assert sum(took) < 300, took  # minutes, not hours, on CPU


def test_run_list_and_dry_run_state_each_presets_cost(capsys, tmp_path):
    """#36.3: sizes before long work — every preset states its time (measured on CPU, or GPU-hours)."""
    code, text = run_cli(["run", "--list"], capsys)
    assert code == 0
    names = [ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith(" ")]
    assert len(names) >= 7 and text.count("cost: ") == len(names)
    assert "GPU-hours" in text and "min" in text
    code, text = run_cli(["run", "demo", "--dry-run", "-o", tmp_path / "d"], capsys)
    assert code == 0 and "cost: CPU" in text and "writes nothing" in text
