"""Hardening (issue #15): hostile model folders, hung streams, unbounded Retry-After, credentials in
URLs. (The sandbox's hostile-code suite is tests/test_sandbox_hostile.py; bad-input paths of the
stages are tests/test_bad_input.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from safekey.llm import ChatRequest, Sampling, get_backend
from safekey.models import load_tokenizer, refuse_remote_code
from safekey.store import write_stats
from safekey.testing import FakeOpenAI
from safekey.types import SafekeyError

KEY = "sk-test-hardening-0123456789"


@pytest.fixture
def hostile_model(tiny_model_dir, tmp_path):
    """A real model folder whose config asks transformers to import its own module, which would
    leave a marker file if it ever ran."""
    d = tmp_path / "hostile"
    shutil.copytree(tiny_model_dir, d)
    marker = tmp_path / "PWNED"
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import LlamaConfig as EvilConfig\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (d / "config.json").write_text(json.dumps(cfg))
    return d, marker


def test_model_folder_code_is_refused_everywhere(hostile_model, tmp_path):
    d, marker = hostile_model
    with pytest.raises(SafekeyError, match="asks to run its own code"):
        load_tokenizer(str(d))
    from safekey.llm.base import BackendConfig
    from safekey.llm.hf import HFBackend

    with pytest.raises(SafekeyError, match="auto_map"):
        _ = HFBackend(BackendConfig(kind="hf", model=str(d))).tokenizer
    refuse_remote_code(d, trust_remote_code=True)  # the user asked: no refusal
    assert not marker.exists()


def test_cli_refuses_without_prompting_even_with_yes_on_stdin(hostile_model, tmp_path):
    d, marker = hostile_model
    recs = tmp_path / "r.jsonl"
    recs.write_text(json.dumps({"id": "a", "question": "q", "response": "<think>\nU. K.\n</think>\n\nA", "u_end": 11, "k_end": 14}) + "\n")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "safekey.cli.main", "train", "check-spans", str(recs), "--model", str(d)],
                       input="y\n", capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2 and "asks to run its own code" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert time.monotonic() - t0 < 60 and not marker.exists()


def _backend(srv, tmp_path, **kw):
    return get_backend("openai:fake", base_url=srv.base_url, cache_dir=str(tmp_path / "cache"), **kw)


def test_a_trickling_stream_hits_the_request_deadline(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(api_key=KEY, trickle_s=0.2) as srv:
        srv.inject("trickle", 1)
        be = _backend(srv, tmp_path, timeout_s=1.0, request_deadline_s=2.0, max_retries=0, cache=False)
        t0 = time.monotonic()
        [c] = be.generate([ChatRequest(messages=[{"role": "user", "content": "hi"}], sampling=Sampling(max_tokens=4))])
        took = time.monotonic() - t0
        be.close()
    assert c.error is not None and "request deadline" in c.error, c
    assert took < 6.0  # the per-read timeout alone (1 s, a byte every 0.2 s) would never fire


def test_retry_after_is_capped_per_item(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(api_key=KEY, retry_after=300) as srv:
        srv.inject("429", 10)
        be = _backend(srv, tmp_path, max_retries=6, max_retry_wait_s=1.5, cache=False)
        t0 = time.monotonic()
        [c] = be.generate([ChatRequest(messages=[{"role": "user", "content": "hi"}], sampling=Sampling(max_tokens=4))])
        took = time.monotonic() - t0
        stats = be.stats()
        be.close()
    assert c.error is not None and "retry budget" in c.error, c
    assert took < 10 and stats["retry_budget_exhausted"] == 1


def test_credentials_in_urls_never_reach_disk(tmp_path):
    from safekey.config import dump_yaml

    cfg = {"base_url": f"http://user:{KEY}@127.0.0.1:9/v1", "judge_base_url": f"https://h.example/v1?api_key={KEY}&x=1"}
    write_stats(tmp_path / "run.json", {"config": cfg})
    dump_yaml(cfg, tmp_path / "c.yaml")
    for f in ("run.json", "c.yaml"):
        text = (tmp_path / f).read_text()
        assert KEY not in text and "http://***@127.0.0.1:9/v1" in text and "api_key=***" in text, text


def test_eval_run_json_redacts_the_base_url(shared, tmp_path, monkeypatch):
    shared("xstest/xstest_prompts.csv")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    from safekey.evals.safety import SafetyEvalConfig, run_safety_eval

    with FakeOpenAI(lambda m: "I'm sorry, but I can't help with that.") as srv:
        url = srv.base_url.replace("http://", f"http://user:{KEY}@")
        cfg = SafetyEvalConfig(model="openai:fake", base_url=url, benches=["xstest"], limit=2, max_new_tokens=8)
        be = get_backend("openai:fake", base_url=url, cache=False)
        run_safety_eval(cfg, tmp_path / "run", backend=be, progress=False)
        be.close()
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text(errors="replace"), f
