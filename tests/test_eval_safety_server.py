"""Safety eval against the real fault-injecting OpenAI-compatible server (safekey.testing.fake_openai):
judge faults are counted and completed on rerun; kill -9 mid-judging loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import cli_process

from safekey.testing.fake_openai import FakeOpenAI


def responder(messages):
    """Plays both roles: the evaluated model (alternating compliance / refusal) and the 1-5 judge
    (score 5 when the quoted response complies, 1 otherwise)."""
    text = messages[-1]["content"]
    if "-response>" in text:  # a judge prompt: read only the quoted response
        quoted = text.split("-response>\n", 1)[1].split("\n</data-", 1)[0]
        score = 5 if quoted.startswith("Sure") else 1
        return json.dumps({"reason": f"quoted response starts with {quoted[:12]!r}", "score": score})
    if len(text) % 2:
        return "Sure, here is how: step 1, gather the materials; step 2, proceed."
    return "I'm sorry, but I can't help with that."


def _env(tmp_path):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OPENAI_API_KEY": "sk-test",
            "SAFEKEY_HOME": str(tmp_path / "home")}  # a private LLM cache per test


def _args(srv, out, *extra):
    return ["eval", "safety", "--model", "openai:fake-model",
            "--base-url", srv.base_url, "--bench", "strongreject,xstest-contrast", "--limit", "8",
            "--judge", "harm-1to5", "--judge-model", "openai:fake-judge", "--judge-base-url", srv.base_url,
            "--max-new-tokens", "64", "-o", str(out), "--no-progress", *extra]


def _lines(p: Path):
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_judge_faults_are_counted_then_completed_on_rerun(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    out = tmp_path / "run"
    with FakeOpenAI(responder, fault_rate=0.4, faults=("garbage", "429"), seed=3, retry_after=0.05) as srv:
        p = cli_process.run(_args(srv, out), capture_output=True, text=True, check=False, env=_env(tmp_path), timeout=300)
        s1 = json.loads((out / "summary.json").read_text())
        failed = sum(b["judge_failures"] for b in s1["benchmarks"].values())
        # past --max-judge-failures (default 10 % of a benchmark) the run exits 2 with one line,
        # after writing the summary of what it did measure
        over = [n for n, b in s1["benchmarks"].items() if b["judge_failures"] / b["n"] > 0.1]
        assert p.returncode == (2 if over else 0), p.stderr[-2000:]
        if over:
            assert f"error: {over[0]}: " in p.stderr and "--max-judge-failures" in p.stderr
        # transport faults (429) are retried by the backend; a garbage reply to a judge request
        # is a 200 that cannot be parsed: exactly those become judge failures
        garbage = [e for e in srv.entries(fault="garbage") if "-response>" in (e.last_user or "")]
        assert srv.count(fault="429") > 0  # retried (Retry-After honoured), never a failure
        assert failed == len(garbage) > 0
        assert "rerun the same command" in p.stderr and "harmful_rate" in p.stdout
        for name, b in s1["benchmarks"].items():
            judged = _lines(out / name / "judged.jsonl")
            fails = _lines(out / name / "judged.failures.jsonl") if b["judge_failures"] else []
            assert len(judged) + len(fails) + b["generation_failures"] == b["n"] == 8
            assert b["metrics"]["harmful_rate"]["n"] == len(judged)  # a failure is never in a rate
            assert all("unparseable" in f["reason"] or "failed" in f["reason"] for f in fails)
        srv.fault_rate = 0.0
        p2 = cli_process.run(_args(srv, out), capture_output=True, text=True, check=False, env=_env(tmp_path), timeout=300)
        assert p2.returncode == 0, p2.stderr[-2000:]
    s2 = json.loads((out / "summary.json").read_text())
    for name, b in s2["benchmarks"].items():
        assert b["judge_failures"] == 0 and b["generation_failures"] == 0
        judged = _lines(out / name / "judged.jsonl")
        assert [r["id"] for r in judged] == [f"{'strongreject' if name == 'strongreject' else 'xstest'}-{i}" for i in _ids(name)]
        # the verdict follows the (deterministic) judge: compliance ⇒ 5, refusal ⇒ 1
        assert all((r["judge"]["score"] == 5) == r["generation"].startswith("Sure") for r in judged)
        assert b["metrics"]["mean_harm_score"]["n"] == 8
    assert not (out / "strongreject" / "judged.failures.jsonl").exists()


def _ids(name):
    from safekey.evals.safety import limit_sample
    from safekey.evals.safety_benchmarks import get_benchmark

    return [r.id.split("-", 1)[1] for r in limit_sample(get_benchmark(name).load(), 8)]


def test_kill_9_mid_judging_then_resume(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    ref, out = tmp_path / "ref", tmp_path / "killed"
    with FakeOpenAI(responder, latency=0.15) as srv:
        p = cli_process.run(_args(srv, ref, "--judge-batch-size", "1"), capture_output=True, text=True, check=False,
                           env=_env(tmp_path / "a"), timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        proc = cli_process.popen(_args(srv, out, "--judge-batch-size", "1"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=_env(tmp_path / "b"))
        judged = out / "strongreject" / "judged.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline:
            if judged.exists() and len(judged.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        n_before = len(judged.read_text().splitlines())
        assert 3 <= n_before < 8, "the kill must land mid-judging"
        assert not (out / "summary.json").exists()
        p2 = cli_process.run(_args(srv, out, "--judge-batch-size", "1"), capture_output=True, text=True, check=False,
                            env=_env(tmp_path / "b"), timeout=300)
        assert p2.returncode == 0, p2.stderr[-2000:]
    for name in ("strongreject", "xstest-contrast"):
        for f in ("generations.jsonl", "judged.jsonl"):
            a, b = (ref / name / f).read_text(), (out / name / f).read_text()
            ids = [json.loads(x)["id"] for x in b.splitlines()]
            assert len(ids) == len(set(ids)) == 8
            assert a == b, f"{name}/{f} differs from an uninterrupted run"
    sa = json.loads((ref / "summary.json").read_text())
    sb = json.loads((out / "summary.json").read_text())
    for s in (sa, sb):  # when and by which command line (the -o differs) are not results
        s.pop("created"), s.pop("provenance"), s.pop("llm_cache")  # llm_cache: what this invocation asked
    assert sa == sb
    stats = json.loads((out / "strongreject" / "judged.stats.json").read_text())
    assert stats["resumed"] == n_before
