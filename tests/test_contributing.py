"""CONTRIBUTING.md's worked examples run as written (issue #25): the judge example registers, builds
by name, shows in --judge's help, and judges a real eval run's items."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(section: str) -> list[str]:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, flags=re.S)


def test_adding_a_judge_as_contributing_shows(monkeypatch, tmp_path, tiny_model_dir):
    from safekey.judges import registry

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))  # the test's line stays in the test
    cls_code, line = _blocks("How to add a judge")
    ns: dict = {}
    exec(compile(cls_code, "CONTRIBUTING.md", "exec"), ns)
    exec(compile(line, "CONTRIBUTING.md", "exec"), {**ns, "REGISTRY": registry.REGISTRY, "JudgeSpec": registry.JudgeSpec})
    assert "length" in registry.judge_help()
    j = registry.make_judge("length")
    from safekey.judges import JudgeItem

    v = j.judge([JudgeItem(id="a", question="q", text="x" * 300), JudgeItem(id="b", question="q", text="no")])
    assert [x.harmful for x in v] == [True, False]
    # and it judges a real run through the same eval machinery as every other judge
    from safekey.evals.safety import SafetyEvalConfig, SafetyRun
    from safekey.paths import resource

    cfg = SafetyEvalConfig(model=f"hf:{tiny_model_dir}", bench_files=[str(resource("starter/heldout_harmful.jsonl"))],
                           limit=2, max_new_tokens=4, judge="length")
    s = SafetyRun(cfg, tmp_path / "run", progress=False).run()
    assert s["judge"] == "length" and s["benchmarks"]["heldout_harmful"]["metrics"]["harmful_rate"]["n"] == 2


def test_adding_a_benchmark_as_contributing_shows(monkeypatch, tmp_path, tiny_model_dir, shared):
    shared("jbb/behaviors.csv")
    from safekey.evals import safety_benchmarks

    monkeypatch.setattr(safety_benchmarks, "REGISTRY", dict(safety_benchmarks.REGISTRY))
    (code,) = _blocks("How to add a safety benchmark")
    exec(compile(code, "CONTRIBUTING.md", "exec"), {"__name__": "example"})
    b = safety_benchmarks.get_benchmark("JBB-Goals")
    recs = b.load()
    assert len(recs) == 100 and recs[0].unsafe == 1 and recs[0].bench_category
    from safekey.evals.safety import SafetyEvalConfig, SafetyRun

    cfg = SafetyEvalConfig(model=f"hf:{tiny_model_dir}", benches=["jbb-goals"], limit=3, max_new_tokens=3)
    s = SafetyRun(cfg, tmp_path / "run", progress=False).run()
    assert s["benchmarks"]["jbb-goals"]["n"] == 3 and s["benchmarks"]["jbb-goals"]["sample"]["limit"] == 3


def test_adding_a_solver_as_contributing_shows(monkeypatch, tmp_path, tiny_model_dir):
    """The solver example registers, shows in --attack's help, runs beside the plain solver on one
    benchmark (two rows), records what the model was sent, and the judge sees the item's own request."""
    from safekey.evals.solvers import registry

    monkeypatch.setattr(registry, "SOLVERS", dict(registry.SOLVERS))
    code, line = _blocks("How to add a solver (an attack)")
    ns: dict = {}
    exec(compile(code, "CONTRIBUTING.md", "exec"), ns)
    exec(compile(line, "CONTRIBUTING.md", "exec"), {**ns, "SOLVERS": registry.SOLVERS})
    assert "refusal-suppression" in registry.solver_help()
    import json

    from safekey import judges
    from safekey.evals.safety import SafetyEvalConfig, SafetyRun
    from safekey.paths import resource

    seen: list[str] = []

    class Spy(judges.KeywordJudge):
        def judge(self, items):
            seen.extend(it.question for it in items)
            return super().judge(items)

    bench = resource("starter/heldout_harmful.jsonl")
    cfg = SafetyEvalConfig(model=f"hf:{tiny_model_dir}", bench_files=[str(bench)], limit=2, max_new_tokens=4,
                           attacks=["none", "refusal-suppression"])
    s = SafetyRun(cfg, tmp_path / "run", judge=Spy(), progress=False).run()
    assert set(s["benchmarks"]) == {"heldout_harmful", "heldout_harmful@refusal-suppression"}
    row = s["benchmarks"]["heldout_harmful@refusal-suppression"]
    assert row["attack"] == "refusal-suppression" and row["bench"] == "heldout_harmful" and row["n"] == 2
    gens = [json.loads(x) for x in (tmp_path / "run" / "heldout_harmful@refusal-suppression" / "generations.jsonl")
            .read_text().splitlines()]
    assert all(g["attack_messages"][-1]["content"].startswith(ns["RULES"]) for g in gens)
    assert seen and not any(q.startswith(ns["RULES"]) for q in seen)  # judged against the request, not the wrapping
