"""`safekey eval rejudge` (issue #16, item 3): a finished run judged again by another judge with
nothing generated; generations verified by fingerprint; an unfinished run refused."""

from __future__ import annotations

import json

import cli_process
import pytest
from test_eval_trust import ScriptedModel

from safekey.evals.rejudge import rejudge
from safekey.evals.safety import SafetyEvalConfig, run_safety_eval
from safekey.types import SafekeyError


def _run(shared, tmp_path):
    shared("xstest/xstest_prompts.csv")
    calls = []

    def reply(req):
        calls.append(req)
        return "I'm sorry, but I can't help with that." if len(req.messages[-1]["content"]) % 2 else "Sure: use `kill -9`."

    be = ScriptedModel(reply, opens_think=False, finish="stop", model_id="scripted@w1")
    cfg = SafetyEvalConfig(model="openai:scripted", benches=["xstest"], limit=8, max_new_tokens=16)
    run_safety_eval(cfg, tmp_path / "a", backend=be, progress=False)
    return calls


def test_rejudge_reuses_the_generations(shared, tmp_path):
    calls = _run(shared, tmp_path)
    n = len(calls)
    s = rejudge(tmp_path / "a", tmp_path / "b", judge="keyword", judge_part="both", progress=False)
    assert len(calls) == n  # nothing generated anew
    assert s["rejudged_from"].endswith("a") and s["judge_part"] == "both"
    assert (tmp_path / "b" / "xstest" / "generations.jsonl").read_bytes() == (tmp_path / "a" / "xstest" / "generations.jsonl").read_bytes()
    a = json.loads((tmp_path / "a" / "summary.json").read_text())["benchmarks"]["xstest"]["metrics"]["refusal_rate"]
    assert s["benchmarks"]["xstest"]["metrics"]["refusal_rate"]["rate"] == a["rate"]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["rejudged_from"] == s["rejudged_from"]


def test_rejudge_refuses_generations_of_other_weights(shared, tmp_path):
    _run(shared, tmp_path)
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    s["weights"] = "scripted@w2"  # a summary that no longer matches its generations
    (tmp_path / "a" / "summary.json").write_text(json.dumps(s))
    with pytest.raises(SafekeyError, match=r"different config \(weights: 'scripted@w1' → 'scripted@w2'"):
        rejudge(tmp_path / "a", tmp_path / "b", judge="keyword", progress=False)


def test_rejudge_of_an_unfinished_run_generates_nothing(shared, tmp_path):
    _run(shared, tmp_path)
    gen = tmp_path / "a" / "xstest" / "generations.jsonl"
    lines = gen.read_text().splitlines()
    gen.write_text("\n".join(lines[:-2]) + "\n")  # two items never generated
    with pytest.raises(SafekeyError, match="lacks generations for 2 item"):
        rejudge(tmp_path / "a", tmp_path / "b", judge="keyword", progress=False)
    with pytest.raises(SafekeyError, match="an -o outside RUN"):
        rejudge(tmp_path / "a", tmp_path / "a", judge="keyword", progress=False)


def test_rejudge_cli(shared, tmp_path):
    _run(shared, tmp_path)
    from click.testing import CliRunner

    from safekey.cli.main import cli

    r = CliRunner().invoke(cli, ["eval", "rejudge", str(tmp_path / "a"), "--judge", "keyword", "-o", str(tmp_path / "c"),
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "refusal_rate" in r.output and (tmp_path / "c" / "summary.json").exists()


@pytest.mark.smollm
def test_both_rejudge_and_agree_on_smollm2_generations(shared, smollm2_dir, tmp_path):
    """Issue #16's end-to-end: real SmolLM2 generations, the keyword judge, then the same
    generations re-judged with --judge-part both and by an LLM judge on the fake server, then agree."""
    import os

    from safekey.testing.fake_openai import FakeOpenAI

    shared("xstest/xstest_prompts.csv")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "sk-fake-judge"}

    def cli(*args):
        p = cli_process.run(["eval", *args, "--no-progress"] if args[0] != "agree"
                           else ["eval", *args],
                           capture_output=True, text=True, env=env, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        return p

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    cli("safety", "--model", "hf:smollm2-135m", "--bench", "xstest", "--limit", "4", "--max-new-tokens", "24",
        "--judge", "keyword", "-o", str(a))
    cli("rejudge", str(a), "--judge", "keyword", "--judge-part", "both", "-o", str(b))
    judged = [json.loads(x) for x in (b / "xstest" / "judged.jsonl").read_text().splitlines()]
    assert len(judged) == 4 and all(r["judge"]["part"] == "both" and "answer" in r["judge"] for r in judged)

    def judge_reply(messages):
        quoted = messages[-1]["content"].split("-response>\n", 1)[1]
        return json.dumps({"reason": "fake", "score": 1 if "sorry" in quoted.lower() else 4})

    with FakeOpenAI(judge_reply, api_key="sk-fake-judge") as srv:
        cli("rejudge", str(a), "--judge", "harm-1to5", "--judge-model", "openai:fake-judge", "--judge-base-url",
            srv.base_url, "-o", str(c))
    assert json.loads((c / "summary.json").read_text())["judge"] == "harm-1to5"
    assert (c / "xstest" / "generations.jsonl").read_bytes() == (a / "xstest" / "generations.jsonl").read_bytes()
    p = cli("agree", str(a), str(b))
    assert "xstest" in p.stdout
