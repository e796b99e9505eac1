"""`safekey doctor` (issue #18): environment, backend specs and a run's size, checked before a run."""

from __future__ import annotations

import os

import cli_process

from safekey.preflight import check_backend, cost, environment
from safekey.testing.fake_openai import FakeOpenAI


def _cli(*args, env=None):
    e = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    e.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    return cli_process.run(["doctor", *args], capture_output=True, text=True,
                          timeout=120, env=e)


def test_checks(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert check_backend(f"hf:{tiny_model_dir}")[0].level == "ok"
    assert check_backend("openai:gpt-4o")[0].level == "error"
    assert check_backend("hf:nobody/uncached-model")[0].level == "error"
    assert check_backend("nokind")[0].level == "error"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    with FakeOpenAI() as srv:
        assert all(f.level == "ok" for f in check_backend("openai:m", base_url=srv.base_url))
    dead = check_backend("openai:m", base_url="http://127.0.0.1:9/v1")
    assert any(f.level == "error" and "does not answer" in f.detail for f in dead)
    env = {f.what: f for f in environment()}
    assert {"gpu", "sandbox", "disk", "hub", "flash-attention"} <= set(env)
    assert any(f.level == "warn" and "--max-new-tokens 8000 on CPU" in f.detail for f in cost(313, 8000, on_gpu=False))


def test_doctor_cli_on_a_config(tmp_path, tiny_model_dir):
    cfg = tmp_path / "safety.yaml"
    cfg.write_text(f"model: hf:{tiny_model_dir}\nbenches: [strongreject, xstest]\njudge: harm-1to5\n")
    p = _cli("--config", str(cfg))
    assert p.returncode == 2 and "no API key in $OPENAI_API_KEY" in p.stderr.strip().splitlines()[-1]
    assert "563 items × 8,000 new tokens" in p.stdout and "on CPU" in p.stdout  # 313 + 250, the default 8,000 tokens
    ok = _cli("--config", str(cfg), env={"OPENAI_API_KEY": "sk-x"})
    assert ok.returncode == 0, ok.stderr
