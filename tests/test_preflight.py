"""Silent or late failures (issue #18, items 1-4): what a command needs is checked before it starts,
and each failure is one line (exit 2), not a traceback or an exit 0 with an empty result."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from safekey.types import SafekeyError


def _cli(*args, env=None):
    e = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    e.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "safekey.cli.main", *args], capture_output=True, text=True, timeout=300, env=e)


def test_offline_llama_guard_is_one_line_before_any_generation(shared, tmp_path):
    shared("xstest/xstest_prompts.csv")
    p = _cli("eval", "safety", "--model", "hf:tiny-random", "--bench", "xstest", "--limit", "2", "--judge", "llama-guard",
             "-o", str(tmp_path / "run"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "meta-llama/Llama-Guard-3-8B is not available offline" in p.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "xstest").exists()  # nothing was generated


def test_missing_judge_key_is_caught_before_generation_and_the_default_is_said(shared, tmp_path):
    shared("xstest/xstest_prompts.csv")
    p = _cli("eval", "safety", "--model", "hf:tiny-random", "--bench", "xstest", "--limit", "2", "--judge", "harm-1to5",
             "-o", str(tmp_path / "run"))
    assert p.returncode == 2 and "no API key in $OPENAI_API_KEY" in p.stderr
    assert "using the default judge model openai:gpt-4o" in p.stderr
    assert not (tmp_path / "run" / "xstest").exists()


def test_unloadable_hub_model_is_one_line():
    from safekey.models import load_tokenizer

    with pytest.raises(SafekeyError, match=r"cannot load the tokenizer of nobody/no-such-model \(a hub id"):
        load_tokenizer("nobody/no-such-model")


def test_collect_with_nothing_loaded_refuses(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEKEY_DATA_DIR", str(tmp_path / "empty"))
    from safekey.datamaking import collect

    cfg = collect.CollectConfig(sources=["HarmBench", "SimpleSafetyTests"], test_sets=[], allow_missing=True)
    with pytest.raises(SafekeyError, match="collect: no source could be loaded"):
        collect.run(str(tmp_path / "pool.jsonl"), cfg)
    assert not (tmp_path / "pool.jsonl").exists()
