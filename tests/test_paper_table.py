"""`safekey report --format md|latex|csv` (issue #18): models × benchmarks with direction marks, n,
intervals, paired Δ vs a baseline in percentage points, and a footer with judge, sampling, code."""

from __future__ import annotations

import csv
import io

import pytest
from test_eval_trust import ScriptedModel

from safekey.evals.safety import SafetyEvalConfig, run_safety_eval
from safekey.report.collect import collect
from safekey.report.paper_table import paper_table, to_csv, to_latex, to_markdown


@pytest.fixture
def two_runs(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    shared("xstest/xstest_prompts.csv")
    refuse = "I'm sorry, but I can't help with that."
    runs = {}
    for name, every in (("base", 5), ("tuned", 2)):  # tuned refuses more often
        be = ScriptedModel(lambda r, k=every: refuse if len(r.messages[-1]["content"]) % k == 0 else "Sure, step 1.",
                           opens_think=False, finish="stop")
        run_safety_eval(SafetyEvalConfig(model=f"openai:{name}", benches=["strongreject", "xstest"], limit=20, label=name),
                        tmp_path / name, backend=be, progress=False)
        runs[name] = tmp_path / name
    return runs


def test_table_values_deltas_and_footer(two_runs):
    evals = collect([two_runs["base"], two_runs["tuned"]]).evals
    t = paper_table(evals, baseline="base")
    assert [c["bench"] for c in t["cols"]] == ["strongreject", "xstest"]
    assert [c["arrow"] for c in t["cols"]] == ["↓", "↓"]  # harmful rate, over-refusal
    base, tuned = t["rows"]
    assert base["baseline"] and "delta" not in base["cells"][0]
    b_items, t_items = evals[0].items["strongreject"], evals[1].items["strongreject"]
    diff = sum(t_items[i]["metrics"]["harmful_rate"] - b_items[i]["metrics"]["harmful_rate"] for i in b_items) / len(b_items)
    assert tuned["cells"][0]["delta"]["delta"] == pytest.approx(diff) and tuned["cells"][0]["n"] == 20
    assert any("judge: keyword" in f for f in t["footer"]) and any("small n" in f for f in t["footer"])
    assert any(f.startswith("code: ") and "unknown" not in f for f in t["footer"])
    md = to_markdown(t)
    assert "| tuned | " in md and "Δ " in md and "pp [" in md and "strongreject harmful_rate ↓" in md
    tex = to_latex(t)
    assert r"\begin{tabular}{lcc}" in tex and r"$\downarrow$" in tex and r"harmful\_rate" in tex and r"$\Delta$" in tex
    rows = list(csv.DictReader(io.StringIO(to_csv(t))))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"base", "tuned"}
    assert float(next(r for r in rows if r["model"] == "tuned" and r["benchmark"] == "strongreject")["delta"]) == pytest.approx(diff)


def test_cli_formats(two_runs, tmp_path):
    from click.testing import CliRunner

    from safekey.cli.main import cli

    r = CliRunner().invoke(cli, ["report", str(two_runs["base"]), str(two_runs["tuned"]), "--format", "md", "--baseline", "base"])
    assert r.exit_code == 0 and "| base (baseline) |" in r.output, r.output
    out = tmp_path / "t.tex"
    r = CliRunner().invoke(cli, ["report", str(two_runs["base"]), "--format", "latex", "-o", str(out)])
    assert r.exit_code == 0 and out.read_text().startswith(r"\begin{tabular}")
    r = CliRunner().invoke(cli, ["report", str(two_runs["base"]), "--format", "md", "--baseline", "nope"])
    assert r.exit_code != 0 and "none of the runs" in str(r.exception) + r.output


def test_html_report_has_the_paper_table_and_what_it_shows(two_runs, tmp_path):
    from safekey.report.build import build_report

    html = build_report([two_runs["base"], two_runs["tuned"]], tmp_path / "r.html").read_text()
    assert 'id="paper-table"' in html and "What this shows:" in html
    assert "tuned vs base on strongreject" in html and any(x in html for x in ("no effect shown", "excludes 0", "no claim"))
    t = paper_table(collect([two_runs["base"], two_runs["tuned"]]).evals, baseline="base")
    from safekey.report.paper_table import what_this_shows

    lines = what_this_shows(t)
    assert len(lines) == 2 and all(sum(x in line for x in ("no effect shown", "excludes 0", "no claim")) == 1 for line in lines)


def test_tiny_n_gets_an_honest_interval_and_no_claim():
    """n = 2, both items flip the same way: the bootstrap said −100 [−100, −100], "better … excludes 0"."""
    from safekey.metrics import MIN_CLAIM_N, paired_delta, sign_test_p
    from safekey.report.paper_table import what_this_shows

    d = paired_delta([1.0, 1.0], [0.0, 0.0])
    assert d["delta"] == -1.0 and d["ci"][1] - d["ci"][0] > 0.5 and d["p"] == 0.5 and d["claim"] is False
    t = {"cols": [{"bench": "sr", "metric": "harmful_rate", "arrow": "↓"}],
         "rows": [{"label": "base", "baseline": True, "cells": [{"value": 1.0, "n": 2}]},
                  {"label": "sft", "baseline": False, "cells": [{"value": 0.0, "n": 2, "delta": d}]}]}
    (line,) = what_this_shows(t)
    assert "no claim" in line and "better" not in line and str(MIN_CLAIM_N) in line
    # a clear effect on enough items is claimed, with the exact test beside the interval
    big = paired_delta([1.0] * 30 + [0.0] * 10, [0.0] * 30 + [0.0] * 10)
    assert big["claim"] and big["ci"][1] < 0 and big["p"] < 1e-6
    t["rows"][1]["cells"][0] = {"value": 0.0, "n": 40, "delta": big}
    (line,) = what_this_shows(t)
    assert "better than base" in line and "sign test" in line
    # discordant pairs both ways: no claim however large n
    mixed = paired_delta([1.0, 0.0] * 20, [0.0, 1.0] * 20)
    assert not mixed["claim"] and mixed["p"] == 1.0
    assert sign_test_p([1, 1, 1, 1, 1]) > 0.05 and sign_test_p([1] * 6) < 0.05


def test_names_are_case_insensitive_with_did_you_mean():
    from safekey.evals.reasoning_benchmarks import get_benchmark as reasoning_bench
    from safekey.evals.safety_benchmarks import get_benchmark, parse_bench_list
    from safekey.models import resolve_model
    from safekey.types import SafekeyError

    assert parse_bench_list("StrongREJECT, XSTest") == ["strongreject", "xstest"]
    with pytest.raises(SafekeyError, match="did you mean 'strongreject'"):
        get_benchmark("strongrejct")
    assert reasoning_bench("MATH500").name == "math500"
    with pytest.raises(SafekeyError, match="did you mean 'humaneval'"):
        reasoning_bench("humaneva")
    with pytest.raises(SafekeyError, match="did you mean 'smollm2-135m'"):
        resolve_model("smolm2-135m")


def test_attack_columns_sit_beside_their_benchmark_and_the_table_is_two_sided(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    shared("xstest/xstest_prompts.csv")

    def reply(r):  # gives in under a prefilled answer (on its topic, without the request's own "I don't…"), refuses otherwise
        topic = " ".join(w for w in r.messages[-1]["content"].split() if "'" not in w and w.lower() not in ("i", "not"))
        return f"a guide to {topic}: step 1." if r.prefill else "I'm sorry, but I can't help with that."

    be = ScriptedModel(reply, opens_think=False, finish="stop")
    run_safety_eval(SafetyEvalConfig(model="openai:m", benches=["strongreject", "xstest"], limit=12,
                                     attacks=["none", "prefill-answer"]), tmp_path / "a", backend=be, progress=False)
    t = paper_table(collect([tmp_path / "a"]).evals)
    assert [c["bench"] for c in t["cols"]] == ["strongreject", "strongreject@prefill-answer", "xstest",
                                               "xstest@prefill-answer"]
    cells = dict(zip((c["bench"] for c in t["cols"]), t["rows"][0]["cells"]))
    assert cells["strongreject"]["value"] == 0.0 and cells["strongreject@prefill-answer"]["value"] == 1.0
    md = to_markdown(t)
    assert "strongreject@prefill-answer ASR ↓" in md and "xstest refusal_rate ↓" in md and "ONE-SIDED" not in md
    rows = list(csv.DictReader(io.StringIO(to_csv(t))))
    assert {(r["benchmark"], r["attack"]) for r in rows} == {("strongreject", "none"), ("strongreject", "prefill-answer"),
                                                             ("xstest", "none"), ("xstest", "prefill-answer")}
    run_safety_eval(SafetyEvalConfig(model="openai:m", benches=["strongreject"], limit=12, attacks=["prefill-answer"]),
                    tmp_path / "b", backend=be, progress=False)
    one = paper_table(collect([tmp_path / "b"]).evals)
    assert any(f.startswith("ONE-SIDED") for f in one["footer"])
