"""The relay behind the multi-rank tests (tests/warm_rank.py): a forked rank's exit status and
output reach the launcher, an environment the host did not import under starts cold, and a relay
killed with -9 takes its rank with it (what the kill -9 + resume tests rely on)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cli_process
import psutil
import pytest
from warm_rank import HOST_ENV

REPO = Path(__file__).resolve().parents[1]


def _relay(argv, env=None, **kw):
    cmd, env = cli_process.warm_ranks([sys.executable, "-m", "torch.distributed.run", "-m", "safekey.cli.main", *argv],
                                      dict(os.environ if env is None else env))
    if HOST_ENV not in env:
        pytest.skip("no warm rank host here (SAFEKEY_WARM_STEPS=0 or a GPU machine): the ranks start cold")
    i = cmd.index(cli_process.RANK_PROGRAM)
    return subprocess.Popen([sys.executable, *cmd[i:]], env=env, cwd=REPO, **kw)


def _forked_lines() -> list[str]:
    return [x for x in cli_process.rank_host_log().read_text().splitlines() if x.startswith("forked rank")]


def test_a_forked_rank_reports_its_status_and_output_and_a_changed_environment_starts_cold(tmp_path):
    argv = ["train", "run", str(tmp_path / "missing.jsonl"), "--model", str(tmp_path), "-o", str(tmp_path / "out")]
    p = _relay(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=120)
    before = _forked_lines()
    assert p.returncode == 2 and "missing.jsonl" in err, (p.returncode, err[-2000:])
    assert before and before[-1].endswith("safekey train run"), before  # forked, not started cold
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}  # read at import: the host's copy would be wrong
    p = _relay(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and "missing.jsonl" in err, (p.returncode, err[-2000:])
    assert _forked_lines() == before  # the cold start in the relay's place


def test_a_relay_killed_with_9_takes_its_rank_with_it(tmp_path, shared, tiny_model_dir):
    rows = json.loads(shared("star1/STAR-1.json").read_text())[:4]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": r["id"], "question": r["question"], "response": r["response"]}) + "\n"
                            for r in rows))
    out = tmp_path / "out"
    relay = _relay(["train", "run", str(data), "--model", str(tiny_model_dir), "--mode", "sft", "-o", str(out),
                    "--epochs", "200", "--max-length", "128", "--set", "save_steps=100000"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "train_log.jsonl").exists():  # the rank is training
        time.sleep(0.05)
    host = psutil.Process(cli_process._rank_host.pid)
    ranks = [c for c in host.children(recursive=True) if c.ppid() != host.pid]  # forks of the handlers
    assert len(ranks) == 1 and relay.poll() is None, ranks
    relay.send_signal(signal.SIGKILL)
    relay.wait(timeout=30)
    _, alive = psutil.wait_procs(ranks, timeout=10)
    assert not alive, f"the forked rank outlived its relay: {alive}"
    assert not (out / "model.safetensors").exists()
