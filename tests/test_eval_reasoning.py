"""`safekey eval reasoning`: the run folder, summary.json, resume, failures, the CLI, SmolLM2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import cli_process
import pytest

from safekey.cli.main import main
from safekey.evals.reasoning import ReasoningConfig, run_reasoning_eval
from safekey.evals.reasoning_benchmarks import load_benchmark
from safekey.llm import BackendConfig, Completion, Sampling

BENCH_KEYS = {"n", "metrics", "truncation", "generation_failures", "per_category"}
RATE_KEYS = {"rate", "ci", "n"}


class ScriptedBackend:
    """A test double answering each request id from a script (text, or an Exception for an error)."""

    def __init__(self, script):
        self.config = BackendConfig(kind="hf", model="scripted", batch_size=2)
        self.script = script
        self.calls: list[str] = []

    def generate(self, requests):
        out = []
        for r in requests:
            self.calls.append(r.id)
            ans = self.script(r)
            if isinstance(ans, Exception):
                out.append(Completion(error=str(ans)))
            else:
                out.append(Completion(text=ans, finish_reason="stop", completion_tokens=len(ans.split())))
        return out

    def close(self):
        pass


def _check_shape(summary, benches):
    assert set(summary) == {"kind", "model", "label", "weights", "provenance", "sampling", "created", "benchmarks"}
    assert summary["kind"] == "reasoning"
    assert set(summary["sampling"]) >= {"temperature", "top_p", "max_tokens", "repetition_penalty"}
    assert re.match(r"\d{4}-\d\d-\d\dT", summary["created"])
    assert set(summary["benchmarks"]) == set(benches)
    for name, b in summary["benchmarks"].items():
        assert set(b) == BENCH_KEYS, name
        head = "pass@1" if name == "humaneval" else "accuracy"
        assert head in b["metrics"] and "no_answer_rate" in b["metrics"]
        for m in b["metrics"].values():
            assert set(m) == RATE_KEYS and len(m["ci"]) == 2
        for cat in b["per_category"].values():
            assert set(cat) == {head} and set(cat[head]) == RATE_KEYS


def test_canonical_cli_all_benchmarks(shared, tmp_path, capsys):
    shared("math500/test.jsonl")
    out = tmp_path / "canon"
    main(["eval", "reasoning", "--canonical", "--limit", "6", "-o", str(out)])
    text = capsys.readouterr().out
    for b in ("math500", "aime2024", "gpqa_diamond", "mmlu_pro", "humaneval"):
        assert f"{b}: pass: 6/6" in text
        assert (out / b / "generations.jsonl").exists() and (out / b / "graded.jsonl").exists()
    summary = json.loads((out / "summary.json").read_text())
    _check_shape(summary, ["math500", "aime2024", "gpqa_diamond", "mmlu_pro", "humaneval"])
    assert summary["model"] == "canonical"
    graded = [json.loads(x) for x in (out / "humaneval" / "graded.jsonl").read_text().splitlines()]
    assert all(g["sandbox"]["status"] == "passed" for g in graded)


def test_per_benchmark_limit(shared, tmp_path, capsys):
    shared("aime/test.jsonl")
    main(["eval", "reasoning", "--canonical", "--bench", "math500,aime", "--limit", "math500=3,aime2024=2",
          "-o", str(tmp_path)])
    text = capsys.readouterr().out
    assert "math500: pass: 3/3" in text and "aime2024: pass: 2/2" in text
    with pytest.raises(SystemExit) as e:
        main(["eval", "reasoning", "--canonical", "--bench", "math500", "--limit", "humaneval=3", "-o", str(tmp_path)])
    assert e.value.code == 2


def test_failures_no_answer_and_resume(shared, tmp_path):
    shared("math500/test.jsonl")
    items = load_benchmark("math500", limit=4)
    gold = {r.id: r.gold for r in items}
    ids = [r.id for r in items]
    broken = True

    def script(req):
        if req.id == ids[0]:
            return f"<think>\nI guess \\boxed{{0}}\n</think>\n\nSo the answer is $\\boxed{{{gold[req.id]}}}$."
        if req.id == ids[1]:
            return "<think>\nthe answer is \\boxed{" + gold[req.id] + "}"  # never finished thinking
        if req.id == ids[2]:
            return "\\boxed{123456789}"  # wrong
        return RuntimeError("backend down") if broken else f"\\boxed{{{gold[req.id]}}}"

    cfg = ReasoningConfig(model="hf:scripted", benchmarks=["math500"], limit=4,
                          sampling=Sampling(temperature=0, max_tokens=64))
    be = ScriptedBackend(script)
    s1 = run_reasoning_eval(cfg, tmp_path, backend=be, progress=False)
    m = s1["benchmarks"]["math500"]
    assert m["n"] == 3 and m["generation_failures"] == 1
    assert m["metrics"]["accuracy"]["rate"] == pytest.approx(1 / 3)
    assert m["metrics"]["no_answer_rate"]["rate"] == pytest.approx(1 / 3)  # counted apart from wrong
    fails = (tmp_path / "math500" / "generations.failures.jsonl").read_text()
    assert "backend down" in fails and ids[3] in fails

    broken = False
    be2 = ScriptedBackend(script)
    s2 = run_reasoning_eval(cfg, tmp_path, backend=be2, progress=False)
    assert be2.calls == [ids[3]]  # resumed: only the failed item is generated again
    m2 = s2["benchmarks"]["math500"]
    assert m2["n"] == 4 and m2["generation_failures"] == 0
    assert m2["metrics"]["accuracy"]["rate"] == pytest.approx(0.5)
    graded = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "math500" / "graded.jsonl").read_text().splitlines()}
    assert graded[ids[0]]["extracted"] == gold[ids[0]]  # the boxed 0 in the thinking is ignored
    assert graded[ids[1]]["extraction"] == "think_not_closed" and graded[ids[1]]["no_answer"] is True
    assert graded[ids[2]]["no_answer"] is False and graded[ids[2]]["correct"] is False
    stats = json.loads((tmp_path / "math500" / "graded.stats.json").read_text())
    assert stats["extraction"] == {"boxed": 3, "think_not_closed": 1}
    _check_shape(json.loads((tmp_path / "summary.json").read_text()), ["math500"])


def test_humaneval_pass_at_k_and_hostile_completion(shared, tmp_path):
    shared("humaneval/HumanEval.jsonl.gz")
    items = {r.id: r for r in load_benchmark("humaneval", limit=2)}
    first, second = list(items)

    def script(req):
        item, j = req.id.split("#")
        r = items[item]
        if item == first:  # always right, fenced full function
            return f"```python\n{r.code_prompt}{r.reference}```"
        # second task: right only for sample 0; sample 1 loops forever, sample 2 returns garbage
        return {"0": r.reference, "1": "    while True:\n        pass\n", "2": "    return None\n"}[j]

    cfg = ReasoningConfig(model="hf:scripted", benchmarks=["humaneval"], limit=2, samples=3, pass_k=[1, 2],
                          sampling=Sampling(temperature=0.8, max_tokens=64),
                          sandbox={"timeout_s": 2.0, "workers": 2})
    s = run_reasoning_eval(cfg, tmp_path, backend=ScriptedBackend(script), progress=False)
    he = s["benchmarks"]["humaneval"]
    assert he["n"] == 2
    assert he["metrics"]["pass@1"]["rate"] == pytest.approx((1 + 1 / 3) / 2)
    assert he["metrics"]["pass@2"]["rate"] == pytest.approx((1 + (1 - 1 / 3)) / 2)  # 1 - C(2,2)/C(3,2)
    graded = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "humaneval" / "graded.jsonl").read_text().splitlines()}
    assert graded[f"{second}#1"]["sandbox"]["status"] == "timeout"
    assert graded[f"{second}#2"]["sandbox"]["reason"].startswith("AssertionError")
    assert graded[f"{first}#0"]["extraction"] == "code_fenced_function"
    gens = [json.loads(x) for x in (tmp_path / "humaneval" / "generations.jsonl").read_text().splitlines()]
    assert sorted(g["id"] for g in gens) == sorted(f"{i}#{j}" for i in items for j in range(3))


def test_bad_options_are_one_line_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "safekey.cli.main", "eval", "reasoning", "--bench", "nope", "--canonical"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown benchmark 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "safekey.cli.main", "eval", "reasoning", "--bench", "humaneval",
                        "--samples", "2", "--pass-k", "5", "-o", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pass@5 needs --samples >= 5" in r.stderr


@pytest.mark.smollm
def test_smollm2_cli_math_and_humaneval(smollm2_dir, tmp_path, shared):
    shared("math500/test.jsonl")
    out = tmp_path / "smol"
    t0 = time.monotonic()
    r = cli_process.run(
        ["eval", "reasoning", "--model", f"hf:{smollm2_dir}",
         "--bench", "math500,humaneval", "--limit", "math500=3,humaneval=2", "--max-new-tokens", "48", "-o", str(out)],
        capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "math500" in r.stdout and "humaneval" in r.stdout and "pass@1" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    _check_shape(summary, ["math500", "humaneval"])
    assert summary["sampling"]["max_tokens"] == 48
    assert summary["benchmarks"]["math500"]["n"] + summary["benchmarks"]["math500"]["generation_failures"] == 3
    assert summary["benchmarks"]["humaneval"]["n"] + summary["benchmarks"]["humaneval"]["generation_failures"] == 2
    graded = [json.loads(x) for x in (out / "humaneval" / "graded.jsonl").read_text().splitlines()]
    assert all("sandbox" in g or g["no_answer"] for g in graded)
    assert time.monotonic() - t0 < 600
