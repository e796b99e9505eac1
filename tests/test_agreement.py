"""Judge agreement (issue #16, item 4): κ and α checked against sklearn and the closed form, runs
compared on shared items with their disagreements, and a judge against human labels (JBB's
classifier_comparison.csv reads out of the box)."""

from __future__ import annotations

import json
import random

import pytest
from test_eval_trust import ScriptedModel

from safekey.evals.agreement import against_labels, agree, cohen_kappa, krippendorff_alpha, read_labels
from safekey.evals.safety import SafetyEvalConfig, run_safety_eval
from safekey.judges import Verdict


def test_kappa_matches_sklearn_and_alpha_matches_its_closed_form():
    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(5, 60)
        a = [rng.random() < 0.4 for _ in range(n)]
        b = [x if rng.random() < 0.8 else not x for x in a]
        if len(set(a)) == 1 and len(set(b)) == 1:
            continue
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
        d = sum(x != y for x, y in zip(a, b))
        n1 = sum(a) + sum(b)
        n0 = 2 * n - n1
        assert krippendorff_alpha(list(zip(a, b))) == pytest.approx(1 - (2 * n - 1) * d / (n0 * n1))
    assert krippendorff_alpha([[True, True, True], [False, False, False]]) == pytest.approx(1.0)
    assert cohen_kappa([True, True], [True, True]) is None  # no variation: agreement by chance is total


class FlipJudge:
    """A judge that calls every k-th item's response the opposite of the keyword judge."""

    name = "flip"
    proxy = False

    def __init__(self, k):
        from safekey.judges import KeywordJudge

        self.k, self.base = k, KeywordJudge()

    def judge(self, items):
        out = []
        for it, v in zip(items, self.base.judge(items)):
            flip = int(it.id.split("-")[-1]) % self.k == 0
            r = v.refused != flip
            out.append(Verdict(label="flip", harmful=not r, refused=r, complied=not r))
        return out

    def fingerprint(self):
        return {"judge": self.name, "k": self.k}

    def close(self):
        pass


def test_agree_on_two_runs_and_against_labels(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    be = ScriptedModel(lambda r: "I can't help." if len(r.messages[-1]["content"]) % 3 else "Sure, step 1.",
                       opens_think=False, finish="stop")
    cfg = SafetyEvalConfig(model="openai:scripted", benches=["strongreject"], limit=30)
    run_safety_eval(cfg, tmp_path / "kw", backend=be, progress=False)
    run_safety_eval(cfg, tmp_path / "flip", backend=be, judge=FlipJudge(4), progress=False)
    res = agree([tmp_path / "kw", tmp_path / "flip"])
    row = res["benchmarks"]["strongreject"]
    kw = {json.loads(x)["id"]: json.loads(x)["judge"]["harmful"] for x in (tmp_path / "kw" / "strongreject" / "judged.jsonl").open()}
    fl = {json.loads(x)["id"]: json.loads(x)["judge"]["harmful"] for x in (tmp_path / "flip" / "strongreject" / "judged.jsonl").open()}
    ids = sorted(kw)
    assert row["n"] == 30 and {d["id"] for d in row["disagreements"]} == {i for i in ids if kw[i] != fl[i]}
    [k] = row["kappa"].values()
    assert k == pytest.approx(cohen_kappa([kw[i] for i in ids], [fl[i] for i in ids]))
    assert row["per_category"] and all(c["n"] > 0 for c in row["per_category"].values())
    labels = tmp_path / "human.jsonl"
    labels.write_text("".join(json.dumps({"id": i, "label": int(kw[i])}) + "\n" for i in ids))
    lab = against_labels(tmp_path / "flip", labels)["benchmarks"]["strongreject"]
    c = lab["confusion"]
    assert c["fp"] + c["fn"] == len(row["disagreements"]) and c["tp"] + c["fp"] + c["fn"] + c["tn"] == 30
    from click.testing import CliRunner

    from safekey.cli.main import cli

    out = CliRunner().invoke(cli, ["eval", "agree", str(tmp_path / "kw"), str(tmp_path / "flip")])
    assert out.exit_code == 0 and "Krippendorff" in out.output, out.output
    out = CliRunner().invoke(cli, ["eval", "agree", str(tmp_path / "flip"), "--labels", str(labels)])
    assert out.exit_code == 0 and "precision" in out.output, out.output


def test_jbb_classifier_comparison_reads_as_labels(shared):
    labels = read_labels(shared("jbb/classifier_comparison.csv"))
    assert len(labels) == 100 and sum(labels.values()) == 43 and set(labels) == {str(i) for i in range(100)}


def test_report_shows_agreement_of_rejudged_runs_and_label_comparisons(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    from click.testing import CliRunner

    from safekey.cli.main import cli
    from safekey.evals.rejudge import rejudge
    from safekey.report.build import build_report

    be = ScriptedModel(lambda r: "I can't help." if len(r.messages[-1]["content"]) % 3 else "Sure, step 1.",
                       opens_think=False, finish="stop")
    run_safety_eval(SafetyEvalConfig(model="openai:scripted", benches=["strongreject"], limit=12), tmp_path / "a",
                    backend=be, progress=False)
    rejudge(tmp_path / "a", tmp_path / "b", judge="keyword", judge_part="both", progress=False)
    ids = [json.loads(x)["id"] for x in (tmp_path / "a" / "strongreject" / "judged.jsonl").open()]
    labels = tmp_path / "human.jsonl"
    labels.write_text("".join(json.dumps({"id": i, "label": k % 2}) + "\n" for k, i in enumerate(ids)))
    assert CliRunner().invoke(cli, ["eval", "agree", str(tmp_path / "a"), "--labels", str(labels)]).exit_code == 0
    html = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "r.html").read_text()
    assert "Judge agreement on the same generations" in html and "Krippendorff" in html
    assert "vs human labels (human.jsonl)" in html
