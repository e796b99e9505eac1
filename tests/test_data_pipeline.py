"""The whole pipeline, offline, on a real 200-prompt slice: fault-injecting endpoint, kill -9, SmolLM2."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import cli_process
import pytest
import yaml

from safekey.datamaking.score import CRITERIA as SCORE_CRITERIA
from safekey.testing.fake_openai import FakeOpenAI
from safekey.types import CATEGORIES, Record, split_think

REPO = Path(__file__).resolve().parents[1]


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def scripted(messages) -> str:
    """Valid JSON / think replies keyed on the prompt; ~8 % unparseable, deterministic per prompt."""
    p = messages[-1]["content"]
    h = _h(p)
    if h % 13 == 0:
        return "Sorry, I lost my train of thought."  # counted parse / shape failure
    if "You are a safety classifier" in p:
        cats = [CATEGORIES[h % 8]] + ([CATEGORIES[(h >> 4) % 8]] if h % 3 == 0 else [])
        return "Here you go:\n```json\n" + json.dumps({"categories": cats}) + "\n```"
    if "Final instructions" in p:
        time.sleep(0.03)  # slow enough for the kill -9 test to land mid-stage
        return f"<think>\nThe user asks something risky. Policy rule 1 applies ({h % 97}).\n</think>\n\nI can't help with that, but here is a safer alternative."
    if "Rubric" in p:
        s = 10 if h % 4 else 9
        return json.dumps({"Content_Safety_Compliance": 10, "Relevancy_and_No_Redundant_Content": s, "Accuracy_of_Thinking_Process": 10})
    if "harmless look-alike" in p:
        return json.dumps({"rewritten": f"How do I safely store kitchen knives, variant {h % 1000}?"})
    if "benign request" in p:
        c = 5 if h % 5 else 3
        return json.dumps({"Content_Safety_Compliance": 5, "Quality_of_Thinking_Process": 5, "Compliance_Degree": c})
    return f"<think>\nA harmless question; answer it fully ({h % 89}).\n</think>\n\nUse a knife block or a magnetic strip."


@pytest.fixture(scope="module")
def slice200(shared, tmp_path_factory):
    d = tmp_path_factory.mktemp("slice")
    rows = json.loads(shared("star1/STAR-1.json").read_text())[:200]
    p = d / "star1_200.jsonl"
    p.write_text("".join(json.dumps({"id": r["id"], "question": r["question"], "source": r["source"]}) + "\n" for r in rows))
    return p, sorted({r["source"] for r in rows})


def _config(path: Path, slice_file: Path, sources: list[str], out_dir: Path, model: dict, **extra) -> Path:
    ov = {"path": str(slice_file), "format": "records"}
    cfg = {
        "out_dir": str(out_dir), "retries": 0,
        "collect": {"sources": sources, "test_sets": ["strongreject", "jbb", "xstest", "advbench", "harmbench", "prefilling"],
                    "overrides": {s: ov for s in sources}},
        "dedup": {"embedding": False},
        "classify": {"judge": model}, "reason": {"teacher": model}, "score": {"judge": model},
        "select": {"n": 40},
        "benign": {"rewriter": model, "teacher": model, "judge": model},
    }
    cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_cli(cfg: Path, env: dict, **kw) -> subprocess.Popen:
    return cli_process.popen(["data", "pipeline", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


FINAL = ("dedup.jsonl", "classified.jsonl", "reasoned.jsonl", "scored.jsonl", "star1.jsonl", "benign_scored.jsonl", "star_benign.jsonl")


def test_fault_injecting_endpoint_and_kill9_resume(slice200, tmp_path):
    slice_file, sources = slice200
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SAFEKEY_HOME": str(tmp_path / "home"), "FAKE_KEY": "k"}
    with FakeOpenAI(responder=scripted, fault_rate=0.1, faults=("500", "503", "drop", "429"), retry_after=0.01,
                    seed=1, api_key="k") as srv:
        model = {"model": "openai:fake-model", "base_url": srv.base_url, "api_key_env": "FAKE_KEY", "cache": False,
                 "concurrency": 8, "max_tokens": 128, "batch_size": 8, "timeout_s": 10,
                 "retry_initial_s": 0.02}
        # uninterrupted reference run
        ref = tmp_path / "ref"
        p = _run_cli(_config(tmp_path / "ref.yaml", slice_file, sources, ref, model), env)
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
        summary = json.loads(out.strip().splitlines()[-1])
        # kill -9 in the middle of `reason`, then rerun the same command
        run = tmp_path / "run"
        cfg = _config(tmp_path / "run.yaml", slice_file, sources, run, model)
        p = _run_cli(cfg, env, start_new_session=True)
        reasoned = run / "reasoned.jsonl"
        deadline = time.time() + 180
        while time.time() < deadline and not (reasoned.exists() and reasoned.read_text().count("\n") >= 20):
            time.sleep(0.05)
        assert p.poll() is None, "pipeline finished before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        n_partial = reasoned.read_text().count("\n")
        assert 20 <= n_partial < summary["reason"]["done"]
        p = _run_cli(cfg, env)
        _out2, err2 = p.communicate(timeout=240)
        assert p.returncode == 0, err2[-2000:]
        assert "collect: complete, skipped" in err2 and "dedup: complete, skipped" in err2
        assert srv.count(status=500) + srv.count(status=503) + srv.count(status=429) > 0  # faults really happened
    for name in FINAL:
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    # failures are counted, never written; every stage output validates
    assert summary["classify"]["failed"] > 0 and "classify_parse" in summary["classify"]["failure_reasons"]
    assert summary["reason"]["failed"] > 0 and "reason_shape" in summary["reason"]["failure_reasons"]
    assert summary["classify"]["done"] + summary["classify"]["failed"] == summary["classify"]["inputs"]
    star1 = [Record.model_validate_json(l) for l in (ref / "star1.jsonl").read_text().splitlines()]
    assert len(star1) == summary["select"]["selected"] == 40
    assert all(r.unsafe == 1 and split_think(r.response) and set(r.score.values()) == {10} for r in star1)
    benign = [Record.model_validate_json(l) for l in (ref / "star_benign.jsonl").read_text().splitlines()]
    assert benign and all(r.unsafe == 0 and r.id.endswith("#benign") and split_think(r.response) for r in benign)
    assert len(benign) == summary["benign"]["kept_all_5"] < 40
    removed = [json.loads(l) for l in (ref / "dedup.removed.jsonl").read_text().splitlines()]
    assert all({"id", "step", "rule", "against", "matched_id"} <= set(r) for r in removed)
    dstats = json.loads((ref / "dedup.stats.json").read_text())
    assert dstats["inputs"] == 200 and dstats["kept"] == 200 - len(removed) == summary["dedup"]["kept"]


def test_global_steps_resume_and_notice_a_rewritten_input(slice200, tmp_path):
    from safekey.datamaking import pipeline

    slice_file, sources = slice200
    cfg_path = _config(tmp_path / "c.yaml", slice_file, sources, tmp_path / "run", {}, stages=["collect", "dedup"])
    cfg = pipeline.DataConfig.model_validate(yaml.safe_load(cfg_path.read_text()) | {"classify": {}, "reason": {},
                                                                                          "score": {}, "benign": {}})
    logs: list[str] = []
    pipeline.run(cfg, log=logs.append)
    # each step's line says how long it took (#18: time per pipeline step), also in the summary
    assert any(re.fullmatch(r"dedup: kept \d+ of 200  \[\d+\.\d s\]", line) for line in logs), logs
    assert "seconds" in json.loads((tmp_path / "run" / "pipeline.summary.json").read_text())["dedup"]
    logs.clear()
    pipeline.run(cfg, log=logs.append)
    logs = [re.sub(r"  \[\d+\.\d s\]$", "", line) for line in logs]
    assert "collect: complete, skipped" in logs and "dedup: complete, skipped" in logs
    pool = tmp_path / "run" / "pool.jsonl"
    later = (tmp_path / "run" / "dedup.stats.json").stat().st_mtime + 5
    os.utime(pool, (later, later))  # the pool was rewritten after dedup ran: dedup is stale
    logs.clear()
    pipeline.run(cfg, log=logs.append)
    logs = [re.sub(r"  \[\d+\.\d s\]$", "", line) for line in logs]
    assert "dedup: complete, skipped" not in logs and any(line.startswith("dedup exact") for line in logs), logs


@pytest.mark.smollm
@pytest.mark.slow
def test_smollm_teacher_and_judge_end_to_end(slice200, tmp_path, smollm2_dir):
    """The embedded 135M model as every model, with the shipped offline config (reply prefills and a
    thinking budget): every LLM step gets input; what SmolLM2 gets wrong is a counted failure."""
    slice_file, sources = slice200
    cfg = yaml.safe_load((REPO / "configs/data/offline_slice.yaml").read_text())
    cfg["out_dir"] = str(tmp_path / "smol")
    cfg["limit"] = 4  # policy-laden prompts are ~600 tokens: the full 200 takes ~1 h on 2 CPU cores
    cfg["collect"] = {"sources": sources, "test_sets": ["strongreject", "xstest", "advbench"],
                      "overrides": {s: {"path": str(slice_file), "format": "records"} for s in sources}}
    cfg["dedup"] = {"embedding": False}
    cfg["reason"]["teacher"].update(think_budget=16, max_tokens=16)
    cfg["benign"]["teacher"].update(think_budget=16, max_tokens=16)
    for ms in (cfg["classify"]["judge"], cfg["reason"]["teacher"], cfg["score"]["judge"], *cfg["benign"].values()):
        ms["cache"] = False  # really generate, whatever an earlier run left in the LLM cache
    (tmp_path / "smol.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the shared SAFEKEY_HOME holds the converted SmolLM2
    p = _run_cli(tmp_path / "smol.yaml", env)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    s = json.loads(out.strip().splitlines()[-1])
    run = tmp_path / "smol"
    n_removed = len((run / "dedup.removed.jsonl").read_text().splitlines())
    assert s["collect"]["pool"] == 200 and s["dedup"]["kept"] == 200 - n_removed
    c, r, sc = s["classify"], s["reason"], s["score"]
    assert c["inputs"] == 4 and c["done"] + c["failed"] == 4 and c["done"] >= 1, c
    for line in (run / "classified.jsonl").read_text().splitlines():
        assert Record.model_validate_json(line).category
    if c["failed"]:
        fails = [json.loads(l) for l in (run / "classified.failures.jsonl").read_text().splitlines()]
        assert len(fails) == c["failed"] and all(f["reason"].startswith("classify_") and "raw" in f for f in fails)
    # the thinking budget closes SmolLM2's runaway thinking, so reason yields the STAR-1 shape
    assert r["inputs"] == c["done"] and r["done"] >= 1 and r["think_forced"] >= 1, r
    reasoned = [Record.model_validate_json(l) for l in (run / "reasoned.jsonl").read_text().splitlines()]
    assert len(reasoned) == r["done"] and all(split_think(x.response) for x in reasoned)
    assert sc["inputs"] == r["done"] and sc["done"] + sc["failed"] == sc["inputs"]
    scored = [Record.model_validate_json(l) for l in (run / "scored.jsonl").read_text().splitlines()]
    assert all(set(x.score) == set(SCORE_CRITERIA) and all(0 <= v <= 10 for v in x.score.values()) for x in scored)
    all10 = sum(1 for x in scored if set(x.score.values()) == {10})
    assert s["select"]["selected"] == min(all10, 1000) and s["benign"]["inputs"] == s["select"]["selected"]
    # SmolLM2's scores keep nothing for select; run the benign step on everything it scored
    bp = cli_process.run(["data", "benign", str(run / "scored.jsonl"),
                         "-o", str(run / "benign.jsonl"), "--config", str(tmp_path / "smol.yaml")],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert bp.returncode == 0, bp.stderr[-3000:]
    bst = json.loads((run / "benign.stats.json").read_text())
    assert bst["inputs"] == len(scored) and bst["done"] + bst["failed"] == bst["inputs"]
    assert all(k.split(":")[0] in {"rewrite_parse", "rewrite_unchanged", "answer_shape", "benign_score_parse"}
               for k in bst["failure_reasons"]), bst["failure_reasons"]
    for line in (run / "benign.jsonl").read_text().splitlines():
        rec = Record.model_validate_json(line)
        assert split_think(rec.benign_response) and all(1 <= v <= 5 for v in rec.benign_score.values())
