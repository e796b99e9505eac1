"""Provenance and folder hygiene (issue #18): what produced a result is recorded; an eval and a
training run never share a folder; rerunning one benchmark keeps the others in summary.json."""

from __future__ import annotations

import json

import pytest
from test_eval_trust import ScriptedModel

from safekey.evals.safety import SafetyEvalConfig, run_safety_eval
from safekey.provenance import git_commit, provenance
from safekey.types import SafekeyError


def _be():
    return ScriptedModel(lambda r: "I can't help with that.", opens_think=False, finish="stop")


def test_run_and_summary_record_provenance_and_label(shared, tmp_path):
    shared("xstest/xstest_prompts.csv")
    s = run_safety_eval(SafetyEvalConfig(model="openai:scripted", benches=["xstest"], limit=2, label="SafeKey-7B"),
                        tmp_path / "run", backend=_be(), progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    for p in (s["provenance"], info["provenance"]):
        assert p["safekey_version"] and p["command"].startswith("safekey") and p["python"]
        assert p["git_commit"] == git_commit()
    assert s["label"] == "SafeKey-7B" and s["weights"] == "scripted@1" and s["judge_fingerprint"]["judge"] == "keyword"
    from safekey.report.collect import collect

    [e] = collect([tmp_path / "run"]).evals
    assert e.label == "SafeKey-7B"  # reports name the model by its label, not its folder


def test_git_commit_of_this_checkout():
    c = git_commit()
    if c is None:
        pytest.skip("not running from a git checkout (an installed wheel): no commit to record")
    assert len(c.split("+")[0]) == 40 and provenance()["git_commit"] == c


def test_summary_is_cumulative_across_benchmark_reruns(shared, tmp_path):
    shared("xstest/xstest_prompts.csv")
    base = dict(model="openai:scripted", limit=2)
    run_safety_eval(SafetyEvalConfig(benches=["xstest"], **base), tmp_path / "run", backend=_be(), progress=False)
    s = run_safety_eval(SafetyEvalConfig(benches=["strongreject"], **base), tmp_path / "run", backend=_be(), progress=False)
    assert set(s["benchmarks"]) == {"xstest", "strongreject"}
    # another judge part is another run: not merged
    s = run_safety_eval(SafetyEvalConfig(benches=["strongreject"], judge_part="full", **base), tmp_path / "run2",
                        backend=_be(), progress=False)
    assert set(s["benchmarks"]) == {"strongreject"}


def test_eval_and_training_never_share_a_folder(shared, tmp_path, tiny_model_dir):
    shared("xstest/xstest_prompts.csv")
    train_dir = tmp_path / "trained"
    train_dir.mkdir()
    (train_dir / "train_stats.json").write_text("{}")
    with pytest.raises(SafekeyError, match="holds a training run"):
        run_safety_eval(SafetyEvalConfig(model="openai:scripted", benches=["xstest"], limit=1), train_dir, backend=_be(),
                        progress=False)
    from safekey.evals.reasoning import ReasoningConfig, run_reasoning_eval

    with pytest.raises(SafekeyError, match="holds a training run"):
        run_reasoning_eval(ReasoningConfig(benchmarks=["math500"], limit=1), train_dir, canonical=True, progress=False)
    eval_dir = tmp_path / "evaluated"
    run_safety_eval(SafetyEvalConfig(model="openai:scripted", benches=["xstest"], limit=1), eval_dir, backend=_be(),
                    progress=False)
    from safekey.train.config import TrainConfig
    from safekey.train.run import train

    recs = tmp_path / "r.jsonl"
    recs.write_text(json.dumps({"id": "a", "question": "q", "response": "<think>\nU. K.\n</think>\n\nA"}) + "\n")
    with pytest.raises(SafekeyError, match="holds an evaluation run"):
        train(TrainConfig(model=str(tiny_model_dir), mode="sft"), recs, eval_dir)
