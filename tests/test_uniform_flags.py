"""#18 consistency: every stage takes -o, --overwrite, --skip-bad, --config and --set (collect has
no JSONL input, so no --skip-bad), and each flag does what it says — whole-file steps skip a
complete output and --overwrite recomputes it; `train run --overwrite` starts afresh and
`--skip-bad` keeps malformed lines aside; `annotate --config/--set` reach the labeller."""

from __future__ import annotations

import json

import cli_process
import click
import pytest
from click.testing import CliRunner
from test_train_spans import star1_records

from safekey.cli.main import cli
from safekey.store import write_records

STAGES = [("data", "collect"), ("data", "dedup"), ("data", "classify"), ("data", "reason"), ("data", "score"),
          ("data", "select"), ("data", "benign"), ("data", "pipeline"), ("train", "run"), ("annotate",)]


def _command(path):
    cmd = cli
    ctx = click.Context(cli)
    for name in path:
        cmd = cmd.get_command(ctx, name)
    return cmd


@pytest.mark.parametrize("path", STAGES, ids=lambda p: " ".join(p))
def test_every_stage_takes_the_common_flags(path):
    opts = {o for p in _command(path).params for o in p.opts}
    want = {"-o", "--overwrite", "--config", "--set"} | ({"--skip-bad"} if path != ("data", "collect") else set())
    assert want <= opts, f"safekey {' '.join(path)} lacks {sorted(want - opts)}"


def _cli(*args):
    return cli_process.run([*args], capture_output=True, text=True)


def test_select_skips_a_complete_output_and_overwrite_recomputes(tmp_path, shared):
    from safekey.store import read_records

    recs = list(read_records(shared("star1/STAR-1.json")))[:40]
    inp = tmp_path / "scored.jsonl"
    inp.write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    out = tmp_path / "sel.jsonl"
    first = _cli("data", "select", str(inp), "-o", str(out), "-n", "10")
    assert first.returncode == 0, first.stderr
    mtime = out.stat().st_mtime_ns
    again = _cli("data", "select", str(inp), "-o", str(out), "-n", "10")
    assert again.returncode == 0 and "complete for this config and these inputs, skipped" in again.stderr
    assert out.stat().st_mtime_ns == mtime
    other = _cli("data", "select", str(inp), "-o", str(out), "-n", "5")  # another config is recomputed
    assert other.returncode == 0 and "skipped" not in other.stderr and len(out.read_text().splitlines()) == 5
    forced = _cli("data", "select", str(inp), "-o", str(out), "-n", "5", "--overwrite")
    assert forced.returncode == 0 and "skipped" not in forced.stderr and out.stat().st_mtime_ns != mtime


def test_train_overwrite_and_skip_bad(tmp_path, shared, tiny_model_dir, capsys):
    data = tmp_path / "train.jsonl"
    write_records(data, star1_records(shared, 4))
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:2] + ['{"id": "broken", "question": '] + lines[2:]) + "\n")
    base = ["train", "run", str(data), "--model", str(tiny_model_dir), "--mode", "sft", "-o", str(tmp_path / "out"),
            "--epochs", "1", "--max-length", "160", "--set", "effective_batch=2", "--set", "last_k_epochs=0"]
    from cli_helpers import run_cli  # the refusals in-process (a process start each is suite time)

    code, text = run_cli(base, capsys)
    assert code == 2 and "train.jsonl:3" in text.strip().splitlines()[-1]
    ok = _cli(*base, "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    rejects = (tmp_path / "out" / "train.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1 and "train.jsonl:3" in rejects[0]
    assert json.loads((tmp_path / "out" / "train_stats.json").read_text())["records"] == 4
    code, text = run_cli([*base, "--skip-bad"], capsys)
    assert code == 2 and "--overwrite" in text
    fresh = _cli(*base, "--skip-bad", "--overwrite", "--set", "lr=5e-4")
    assert fresh.returncode == 0, fresh.stderr
    assert "lr: 0.0005" in (tmp_path / "out" / "train_config.yaml").read_text()
    code, text = run_cli([*base, "--overwrite", "--resume"], capsys)
    assert code == 2 and "contradict" in text


def test_annotate_config_and_set(tmp_path, shared):
    recs = star1_records(shared, 18)[6:]  # 7 of these 12 get a U of 2-3 sentences by default
    data = tmp_path / "in.jsonl"
    write_records(data, [r.model_copy(update={"u_end": None, "k_end": None}) for r in recs])
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("labeller: heuristic\nmax_u_sentences: 1\n")
    r = CliRunner().invoke(cli, ["annotate", str(data), "-o", str(tmp_path / "a.jsonl"), "--config", str(cfg), "--no-progress"])
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert got and all(g["u_sentences"] <= 1 for g in got)
    r = CliRunner().invoke(cli, ["annotate", str(data), "-o", str(tmp_path / "d.jsonl"), "--no-progress"])
    assert max(json.loads(line)["u_sentences"] for line in (tmp_path / "d.jsonl").read_text().splitlines()) > 1
    r = CliRunner().invoke(cli, ["annotate", str(data), "-o", str(tmp_path / "b.jsonl"), "--set", "max_u_sentences=0",
                                 "--no-progress"])
    assert r.exit_code != 0 and "max_u_sentences" in str(r.exception)


def _all_commands(group, ctx, path=()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, click.Context(cmd, parent=ctx), (*path, name))
        else:
            yield (*path, name), cmd


def test_one_default_style_in_help():
    """Defaults read `[default: X]` everywhere (click's own style), never a bare `[X]`."""
    import re

    bare = []
    for path, cmd in _all_commands(cli, click.Context(cli)):
        for p in cmd.params:
            text = getattr(p, "help", None) or ""
            for m in re.finditer(r"\[([^\]]+)\]\.?$", text):
                if not m.group(1).startswith("default:"):
                    bare.append(f"safekey {' '.join(path)} {p.opts[0]}: {text}")
    assert not bare, bare
