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
