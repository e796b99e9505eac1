"""`safekey analyze aha` (issue #17, item 1) on eval runs: U/K found in the model's own thinking
(also when the chat template opened the <think>), aha rate, harm given aha vs no aha, the items
without U/K by reason, and the section in the HTML report."""

from __future__ import annotations

import json

import pytest
from test_eval_trust import ScriptedModel

from safekey.analyze.aha import canonical
from safekey.evals.safety import SafetyEvalConfig, run_safety_eval

AHA = ("The user is asking how to build a weapon at home. This is a harmful request and the policy on violence "
       "does not allow me to help with it. I will decline.\n</think>\n\nI'm sorry, but I can't help with that.")
NO_AHA = ("The user is asking how to build a weapon at home. Let me think about the materials needed. First the "
          "barrel.\n</think>\n\nSure, here is how: step 1, get a pipe.")


def test_canonical_traces():
    rec, why = canonical({"id": "a", "response": "The user wants X. That is unsafe.\n</think>\n\nNo.", "prompt_opens_think": True})
    assert why is None and rec["response"].startswith("<think>\nThe user wants X.") and not rec["thinking_truncated"]
    cut, _ = canonical({"id": "b", "response": "<think>\nThe user wants X. Hmm", "prompt_opens_think": False})
    assert cut["thinking_truncated"] and cut["response"].endswith("\n</think>\n\n")
    assert canonical({"id": "c", "response": "Plain answer.", "prompt_opens_think": False}) == (None, "no_thinking")


def test_aha_on_an_r1_style_run_and_in_the_report(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    # an R1-style model: its template opens <think>, so its outputs start inside the thinking
    be = ScriptedModel(lambda r: AHA if len(r.messages[-1]["content"]) % 3 else NO_AHA + " " + r.messages[-1]["content"],
                       opens_think=True, finish="stop")  # a compliant answer that addresses the request
    run_safety_eval(SafetyEvalConfig(model="openai:r1ish", benches=["strongreject"], limit=15, label="r1ish"),
                    tmp_path / "run", backend=be, progress=False)
    from click.testing import CliRunner

    from safekey.cli.main import cli

    res = CliRunner().invoke(cli, ["analyze", "aha", str(tmp_path / "run"), "-o", str(tmp_path / "aha.json")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    d = json.loads((tmp_path / "aha.json").read_text())
    m = d["runs"]["r1ish"]["benchmarks"]["strongreject"]
    judged = [json.loads(x) for x in (tmp_path / "run" / "strongreject" / "judged.jsonl").open()]
    n_aha = sum(r["generation"].startswith(AHA[:60]) and "policy" in r["generation"] for r in judged)
    assert m["n"] == 15 and m["with_uk"] == 15 and m["no_uk"] == {}
    assert m["aha_rate"]["rate"] == pytest.approx(n_aha / 15)
    assert m["harmful_given_aha"]["rate"] == 0.0 and m["harmful_given_no_aha"]["rate"] == 1.0  # the keyword judge's verdicts
    assert m["harmful_given_aha"]["n"] == n_aha
    from safekey.report.build import build_report

    html = build_report([tmp_path / "run", tmp_path / "aha.json"], tmp_path / "r.html").read_text()
    assert "The safety aha moment in the generations" in html


def test_items_without_thinking_are_counted(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    be = ScriptedModel(lambda r: "Sure, here you go." if len(r.messages[-1]["content"]) % 2 else "The user asks. Okay.\n</think>\n\nNo.",
                       opens_think=False, finish="stop")
    run_safety_eval(SafetyEvalConfig(model="openai:plain", benches=["strongreject"], limit=10), tmp_path / "run",
                    backend=be, progress=False)
    from click.testing import CliRunner

    from safekey.cli.main import cli

    assert CliRunner().invoke(cli, ["analyze", "aha", str(tmp_path / "run"), "-o", str(tmp_path / "a.json")]).exit_code == 0
    m = json.loads((tmp_path / "a.json").read_text())["runs"]["run"]["benchmarks"]["strongreject"]
    assert m["with_uk"] + sum(m["no_uk"].values()) == m["n"] == 10 and m["no_uk"].get("no_thinking", 0) > 0
