"""The variants × seeds table (report/seeds.py), recomputed by hand on small synthetic runs: per-seed
mean ± sd, the pooled Wilson interval, the seed-averaged paired Δ vs the baseline, the aha / probe /
attention columns, and the plain reading ("no significant difference" when the interval holds 0)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from safekey.metrics import wilson_ci
from safekey.report import seeds
from safekey.report.collect import EvalRun


def _run(label: str, flags: list[int], bench: str = "sr", metric: str = "harmful_rate") -> EvalRun:
    items = {f"p{i}": {"id": f"p{i}", "metrics": {metric: float(f)}} for i, f in enumerate(flags)}
    k = sum(flags)
    summary = {"kind": "safety", "label": label,
               "benchmarks": {bench: {"n": len(flags), "metrics": {metric: {"rate": k / len(flags), "ci": list(wilson_ci(k, len(flags))),
                                                                            "n": len(flags)}}}}}
    return EvalRun(Path(label), label, summary, {bench: items})


@pytest.fixture
def study(tmp_path):
    sft = [[1, 1, 1, 1, 0, 0, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0, 1, 1]]
    sk = [[0, 0, 0, 1, 0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]]
    runs = [_run(f"sft-s{i + 1}", f) for i, f in enumerate(sft)] + [_run(f"safekey-s{i + 1}", f) for i, f in enumerate(sk)]
    (tmp_path / "analysis").mkdir()
    aha = {"kind": "analysis-aha", "runs": {r: {"benchmarks": {"sr": {"aha_rate": {"rate": v, "n": 10}}}}
                                            for r, v in [("sft-s1", .1), ("sft-s2", .2), ("sft-s3", .3),
                                                         ("safekey-s1", .5), ("safekey-s2", .6), ("safekey-s3", .9)]}}
    probe = {"kind": "analysis-probe", "models": {r: {"last_layer": v, "best": v + .01} for r, v in
                                                  [("sft-s1", .6), ("sft-s2", .7), ("sft-s3", .8), ("safekey-s1", .9),
                                                   ("safekey-s2", .9), ("safekey-s3", .9)]}}
    (tmp_path / "analysis" / "aha.json").write_text(json.dumps(aha))
    (tmp_path / "analysis" / "probe.json").write_text(json.dumps(probe))
    manifest = {"kind": "experiment", "name": "t", "seeds": [1, 2, 3], "baseline": "sft",
                "groups": {"sft": ["sft-s1", "sft-s2", "sft-s3"], "safekey": ["safekey-s1", "safekey-s2", "safekey-s3"]},
                # as `safekey run -o runs/x` writes them: relative to where it ran, not to the manifest
                "analyses": {"aha": str(tmp_path / "analysis" / "aha.json"), "probe": "runs/x/analysis/probe.json"}}
    (tmp_path / "experiment.json").write_text(json.dumps(manifest))
    return seeds.seed_study(tmp_path / "experiment.json", runs), sft, sk


def test_seed_statistics_by_hand(study):
    s, sft, sk = study
    rows = {r["variant"]: r for r in s["rows"]}
    cell = rows["safekey"]["cells"]["sr|harmful_rate"]
    per_seed = [sum(f) / 10 for f in sk]
    assert cell["seeds"]["values"] == per_seed
    assert cell["seeds"]["mean"] == pytest.approx(statistics.fmean(per_seed))
    assert cell["seeds"]["sd"] == pytest.approx(statistics.stdev(per_seed))  # sample sd (n − 1), not population
    k = sum(map(sum, sk))
    assert cell["pooled"]["n"] == 30 and cell["pooled"]["ci"] == pytest.approx(list(wilson_ci(k, 30)))
    # paired Δ: per prompt, the seed-averaged outcome minus the baseline's
    by_prompt = [statistics.fmean(f[i] for f in sk) - statistics.fmean(f[i] for f in sft) for i in range(10)]
    d = cell["delta_vs_baseline"]
    assert d["delta"] == pytest.approx(statistics.fmean(by_prompt)) and d["n"] == 10 and d["seeds"] == [3, 3]
    assert d["ci"][0] <= d["delta"] <= d["ci"][1]
    assert "delta_vs_baseline" not in rows["sft"]["cells"]["sr|harmful_rate"]
    assert rows["safekey"]["aha_rate"]["sr"]["mean"] == pytest.approx((.5 + .6 + .9) / 3)
    assert rows["sft"]["probe_auroc_last"]["sd"] == pytest.approx(0.1)  # relative path from the manifest works


def test_seed_table_and_reading(study):
    s, _, _ = study
    md = seeds.to_markdown(s)
    lines = md.splitlines()
    assert lines[0].startswith("| variant | seeds | sr harmful % ↓ | aha rate % ↑ | probe AUROC (last layer) |")
    row = next(line for line in lines if line.startswith("| safekey |"))
    assert "| safekey | 3 | 23.3 ± 5.8 [11.8, 40.9] (n=30); Δ -36.7 [" in row and "Δ -36.7 [" in row and "| 66.7 ± 20.8 |" in row
    tex = seeds.to_latex(s)  # `report --format latex`: the same cells, escaped
    assert r"sr harmful \% $\downarrow$" in tex and r"23.3 $\pm$ 5.8 [11.8, 40.9] (n=30); $\Delta$ -36.7 [" in tex
    hostile = {**s, "rows": [{**s["rows"][0], "variant": r"\input{/etc/passwd}"}]}
    assert r"\input{" not in seeds.to_latex(hostile) and r"\textbackslash{}input\{" in seeds.to_latex(hostile)
    shows = seeds.what_this_shows(s)
    assert len(shows) == 1 and shows[0].startswith("safekey vs sft on sr: harmful rate lower by 36.7 pp [") and shows[0].endswith("the interval excludes 0")


def test_delta_interval_carries_the_seed_spread():
    """Two seeds that disagree completely (all 1 vs all 0) average to 0.5 on every prompt: a
    bootstrap over prompts alone would give a zero-width interval around +0.5 - 0; resampling the
    seeds as well spans the seed disagreement."""
    import numpy as np

    variant = np.array([[1.0] * 20, [0.0] * 20])
    baseline = np.zeros((2, 20))
    d = seeds.seed_prompt_delta(variant, baseline)
    assert d["delta"] == pytest.approx(0.5)
    assert d["ci"][0] <= 0.0 + 1e-9 and d["ci"][1] >= 1.0 - 1e-9
    one = seeds.seed_prompt_delta(np.array([[1.0] * 10 + [0.0] * 10]), np.zeros((1, 20)))  # 1 seed: prompt bootstrap
    assert 0.25 < one["ci"][0] < 0.5 < one["ci"][1] < 0.75
    # a prompt a seed did not judge (NaN) is left out of that seed's mean, not counted as 0
    gap = seeds.seed_prompt_delta(np.array([[1.0, np.nan], [1.0, 1.0]]), np.zeros((1, 2)))
    assert gap["delta"] == pytest.approx(1.0)


def test_no_significant_difference_is_said(tmp_path):
    same = [1, 0] * 6  # 12 prompts: enough for a claim to be possible (issue #24: none below 10)
    runs = [_run("sft-s1", same), _run("sft-s2", same), _run("sk-s1", same[::-1]), _run("sk-s2", same)]
    (tmp_path / "experiment.json").write_text(json.dumps({"seeds": [1, 2], "baseline": "sft",
                                                          "groups": {"sft": ["sft-s1", "sft-s2"], "sk": ["sk-s1", "sk-s2"]}}))
    s = seeds.seed_study(tmp_path / "experiment.json", runs)
    (line,) = seeds.what_this_shows(s)
    assert line.startswith("sk vs sft on sr (harmful rate): no significant difference, +0.0 pp [")
    fig = seeds.figure(s)
    assert len(fig.axes) == 1


def test_no_claim_below_the_minimum_n(tmp_path):
    runs = [_run("sft-s1", [1, 1]), _run("sft-s2", [1, 1]), _run("sk-s1", [0, 0]), _run("sk-s2", [0, 0])]
    (tmp_path / "experiment.json").write_text(json.dumps({"seeds": [1, 2], "baseline": "sft",
                                                          "groups": {"sft": ["sft-s1", "sft-s2"], "sk": ["sk-s1", "sk-s2"]}}))
    (line,) = seeds.what_this_shows(seeds.seed_study(tmp_path / "experiment.json", runs))
    assert "no claim" in line and "lower" not in line and "n=2" in line


def test_reasoning_retention_and_harmful_reasoning_join_the_row(tmp_path):
    """A label's reasoning eval joins its safety row (accuracy, higher is better, last); an eval that
    judged both parts adds the harmful-reasoning column beside the harmful answers."""
    def both(label, answer, thinking):
        r = _run(label, answer)
        b = r.summary["benchmarks"]["sr"]
        b["metrics"]["harmful_reasoning_rate"] = {"rate": sum(thinking) / len(thinking), "ci": [0, 1], "n": len(thinking)}
        for it, t in zip(r.items["sr"].values(), thinking):
            it["metrics"]["harmful_reasoning_rate"] = float(t)
        xs = _run(label, [0] * 12, bench="xs", metric="refusal_rate")  # benign: refuses none, answers half
        helped = [1, 0] * 6
        xs.summary["benchmarks"]["xs"]["metrics"]["compliance_rate"] = {"rate": 0.5, "ci": [0, 1], "n": 12}
        for it, h in zip(xs.items["xs"].values(), helped):
            it["metrics"]["compliance_rate"] = float(h)
        r.summary["benchmarks"].update(xs.summary["benchmarks"])
        r.items.update(xs.items)
        return r

    def math(label, correct):
        summary = {"kind": "reasoning", "label": label,
                   "benchmarks": {"math500": {"n": len(correct), "metrics": {"accuracy": {"rate": sum(correct) / len(correct)}}}}}
        items = {f"q{i}": {"id": f"q{i}", "correct": bool(c)} for i, c in enumerate(correct)}
        return EvalRun(Path("r-" + label), label, summary, {"math500": items})

    ok = [1, 0] * 6
    runs = [math("base", ok), _run("base", [1] * 12),  # no thinking: no harmful-reasoning metric (listed first)
            both("sft-s1", [1, 0] * 6, [1] * 12), both("sft-s2", [1, 0] * 6, [1] * 12),
            both("sk-s1", [0] * 12, [0] * 12), both("sk-s2", [0] * 12, [0] * 12),
            math("sft-s1", ok), math("sft-s2", ok), math("sk-s1", [1] * 12), math("sk-s2", [1] * 12)]
    (tmp_path / "experiment.json").write_text(json.dumps({"seeds": [1, 2], "baseline": "sft",
                                                          "groups": {"base": ["base"], "sft": ["sft-s1", "sft-s2"],
                                                                     "sk": ["sk-s1", "sk-s2"]}}))
    s = seeds.seed_study(tmp_path / "experiment.json", runs)
    head = seeds.to_markdown(s).splitlines()[0]
    assert head == ("| variant | seeds | sr harmful % ↓ | sr harmful reasoning % ↓ | xs refusal % ↓ | xs compliance % ↑ | "
                    "math500 accuracy % ↑ |")
    sk = next(r for r in s["rows"] if r["variant"] == "sk")
    assert sk["cells"]["math500|accuracy"]["seeds"]["mean"] == 1.0 and sk["cells"]["math500|accuracy"]["pooled"]["n"] == 24
    assert sk["cells"]["math500|accuracy"]["delta_vs_baseline"]["delta"] == pytest.approx(0.5)
    shows = seeds.what_this_shows(s)
    sk_lines = [x for x in shows if x.startswith("sk ")]
    assert sk_lines[1].startswith("sk vs sft on sr: harmful reasoning rate lower by 100.0 pp")
    assert sk_lines[-1].startswith("sk vs sft on math500: accuracy higher by 50.0 pp")
    fig = seeds.figure(s)  # 5 panels: 4 in the first row, then 1 (the base run's first column is ordered too)
    assert len(fig.axes) == 5 and [ax.get_ylabel() for ax in fig.axes][2:] == [
        "%  (lower is better)", "%  (higher is better)", "%  (higher is better)"]
