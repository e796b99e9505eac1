"""Attack state belongs to one run (issue #35.1, #35.2): a transcript is continued only by the run
that wrote it (same model, weights, attacker, settings) and is gone with ``--overwrite``; a failed
attacker / evaluator / prefix-writer call is a failure (nothing written, retried next run, counted
against the generation budget), never "the attacker refused". Real fake-OpenAI server on 127.0.0.1
as the attacker, a scripted target."""

from __future__ import annotations

import json

import pytest
from test_attacks import Recording
from test_attacks_adaptive import BENCH, REFUSE, _cfg, attacker, target_reply

from safekey.evals.safety import SafetyEvalConfig, run_safety_eval
from safekey.judges import KeywordJudge
from safekey.testing.fake_openai import FakeOpenAI, Refuse
from safekey.types import SafekeyError


@pytest.fixture
def key(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SAFEKEY_HOME", str(tmp_path / "home"))


def _bench(run, task):
    return json.loads((run / "summary.json").read_text())["benchmarks"][task]


def _lines(run, task):
    return [json.loads(x) for f in (run / task / "transcripts").glob("*.jsonl") for x in f.read_text().split("\n") if x]


@pytest.mark.parametrize("attack", ["pair", "crescendo"])
def test_overwrite_with_a_refusing_model_does_not_report_the_old_runs_successes(tmp_path, key, attack):
    with FakeOpenAI(attacker) as srv:
        run_safety_eval(_cfg(srv, attack), tmp_path / "run", backend=Recording(target_reply, opens_think=False),
                        judge=KeywordJudge(), progress=False)
        assert _bench(tmp_path / "run", f"heldout_harmful@{attack}")["attack_stats"]["successes"] > 0
        refusing = Recording(lambda req: REFUSE, opens_think=False)
        run_safety_eval(_cfg(srv, attack), tmp_path / "run", backend=refusing, judge=KeywordJudge(), progress=False,
                        overwrite=True)
    b = _bench(tmp_path / "run", f"heldout_harmful@{attack}")
    assert b["attack_stats"]["successes"] == 0 and b["metrics"]["harmful_rate"]["rate"] == 0.0
    assert refusing.seen  # the new model was asked, not the old transcript replayed


def test_a_changed_attacker_never_continues_another_attackers_transcript(tmp_path, key):
    """Another attacker setting is another run: its transcript is its own even in the same folder."""
    with FakeOpenAI(attacker) as srv:
        run_safety_eval(_cfg(srv, "pair", streams=2), tmp_path / "run", backend=Recording(target_reply, opens_think=False),
                        judge=KeywordJudge(), progress=False)
        first = _lines(tmp_path / "run", "heldout_harmful@pair")
        srv.reset_log()
        run_safety_eval(_cfg(srv, "pair", streams=2, attacker_temperature=0.5), tmp_path / "run",
                        backend=Recording(target_reply, opens_think=False), judge=KeywordJudge(), progress=False,
                        overwrite=True)
        asked = srv.count(status=200)
    after = _lines(tmp_path / "run", "heldout_harmful@pair")
    assert asked > 0  # the new attacker was asked again
    assert {e["run"] for e in after}.isdisjoint({e["run"] for e in first})


@pytest.mark.parametrize("attack", ["pair", "tap", "crescendo"])
def test_an_attacker_outage_is_a_failure_and_the_rerun_asks_again(tmp_path, key, attack):
    with FakeOpenAI(attacker, fault_rate=1.0, faults=("400",)) as srv:
        target = Recording(target_reply, opens_think=False)
        with pytest.raises(SafekeyError, match="generation"):
            run_safety_eval(_cfg(srv, attack), tmp_path / "run", backend=target, judge=KeywordJudge(), progress=False)
        task = tmp_path / "run" / f"heldout_harmful@{attack}"
        assert _lines(tmp_path / "run", f"heldout_harmful@{attack}") == []  # nothing recorded as a refusal
        fails = [json.loads(x) for x in (task / "generations.failures.jsonl").read_text().splitlines()]
        assert len(fails) == 6 and all(f["reason"].startswith("attacker call failed") for f in fails)
        assert not (task / "generations.jsonl").read_text().strip()  # no item answered as written
        srv.fault_rate = 0.0  # the endpoint is fixed: the rerun attacks for real
        run_safety_eval(_cfg(srv, attack), tmp_path / "run", backend=target, judge=KeywordJudge(), progress=False)
    b = _bench(tmp_path / "run", f"heldout_harmful@{attack}")
    assert b["generation_failures"] == 0 and b["attack_stats"]["successes"] > 0


def test_tap_on_topic_outage_is_a_failure_not_a_verdict(tmp_path, key):
    def evaluator_down(messages):
        if "Reply with exactly [[YES]]" in messages[-1]["content"]:
            raise Refuse("evaluator unavailable")
        return attacker(messages)

    with FakeOpenAI(evaluator_down) as srv, pytest.raises(SafekeyError, match="generation"):
        run_safety_eval(_cfg(srv, "tap"), tmp_path / "run", backend=Recording(target_reply, opens_think=False),
                        judge=KeywordJudge(), progress=False)
    lines = _lines(tmp_path / "run", "heldout_harmful@tap")
    # only the attacker's own refusals (an item it will not attack) are written; no prompt whose check failed
    assert lines and all(e["refused"] and isinstance(e["attacker"], str) and e["prompt"] is None for e in lines)


def test_prefix_writer_outage_is_a_failure_not_a_builtin_prefix(tmp_path, key):
    with FakeOpenAI(lambda m: "Sure, I will help: first gather the parts.", fault_rate=1.0, faults=("400",)) as srv:
        target = Recording(lambda req: "\n</think>\n\nI'm sorry, but I can't help with that.")
        cfg = SafetyEvalConfig(model="openai:scripted", bench_files=[BENCH], attacks=["prefill-thinking"], limit=3,
                               attack_settings={"prefill-thinking": {"words": 6, "prefix_model": "openai:fake-model",
                                                                     "prefix_model_base_url": srv.base_url}})
        with pytest.raises(SafekeyError, match="generation"):
            run_safety_eval(cfg, tmp_path / "run", backend=target, judge=KeywordJudge(), progress=False)
        assert not target.seen  # no item answered under a prefix nobody wrote for it
        srv.fault_rate = 0.0
        run_safety_eval(cfg, tmp_path / "run", backend=target, judge=KeywordJudge(), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "heldout_harmful@prefill-thinking" / "generations.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 3 and all("Sure, I will help" in r["attack_prefill"] for r in rows)
