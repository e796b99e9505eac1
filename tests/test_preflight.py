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


def test_doctor_checks_what_an_experiment_needs(tmp_path, capsys, monkeypatch):
    """#36.7: the model to be trained, the datasets (local or hub cache), the attackers' and the reward
    judge's models, disk for the checkpoints, and the run's size."""
    import yaml
    from cli_helpers import run_cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = {"name": "x", "model": "smollm2-135m", "seeds": [1, 2],
            "train_data": [{"path": "{starter}/train.jsonl", "role": "harmful"}, {"path": "nosuch-org/nosuch-set", "role": "benign"}],
            "variants": [{"name": "sft", "mode": "sft"},
                         {"name": "rl", "mode": "grpo", "set": {"grpo_judge": "granite-guardian"}}],
            "safety": {"bench_files": ["{starter}/heldout_harmful.jsonl"], "attacks": ["none", "pair"],
                       "attack_settings": {"pair": {"attacker": "hf:nosuch-org/attacker-7b"}}}}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(spec))
    code, text = run_cli(["doctor", str(f)], capsys)
    flat = " ".join(text.split())
    assert code == 2
    assert "trained model" in flat and "smollm2-135m: local folder" in flat
    assert "train.jsonl: local" in flat and "nosuch-org/nosuch-set: not in the hub cache and the hub is offline" in flat
    assert "pair attacker" in flat and "nosuch-org/attacker-7b" in flat
    assert "rl reward judge" in flat and "granite-guardian-3.1-8b" in flat
    assert "GiB of checkpoints" in flat and "4 training(s) (2 variant(s) × 2 seed(s)), 5 model(s) evaluated" in flat

    def need(text):
        import re

        return float(re.search(r"checkpoints ≈ ([0-9.]+) GiB", " ".join(text.split())).group(1))

    # LoRA: a checkpoint holds the adapters and their optimizer state, not the model's (the estimate
    # once counted a full fine-tune, 5x too much, and replicate-mini's dry run failed on 37 GiB free)
    full = need(text)
    f.write_text(yaml.safe_dump({**spec, "train": {"lora": True, "lora_top_layers": 8, "set": {"save_total_limit": 1}}}))
    _, text = run_cli(["doctor", str(f)], capsys)
    assert "LoRA r=16" in " ".join(text.split()) and need(text) < full / 3, (need(text), full)
