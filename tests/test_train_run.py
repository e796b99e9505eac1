"""`safekey train run` end to end on a tiny random Llama: schedule of the extra losses, logging, saving,
resume, LoRA, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_train_spans import star1_records

from safekey.store import write_records
from safekey.train.config import TrainConfig
from safekey.train.run import train
from safekey.types import SafekeyError

LOG_NAMES = {"step", "epoch", "loss", "lm_loss", "qmm_loss", "head_loss", "head_acc_u", "head_acc_pre_k", "qmm_k_acc", "lr"}


@pytest.fixture(scope="module")
def records_file(shared, tmp_path_factory):
    p = tmp_path_factory.mktemp("recs") / "star1_spans.jsonl"
    write_records(p, star1_records(shared, 4))
    return p


def _cfg(model, **kw):
    base = dict(model=str(model), mode="safekey", epochs=3, last_k_epochs=2, effective_batch=2, per_device_batch=1,
                max_length=160, lr=1e-3, save_steps=2, save_total_limit=3)
    base.update(kw)
    return TrainConfig(**base)


def _log(out):
    return [json.loads(l) for l in (Path(out) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def safekey_run(records_file, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "sk"
    stats = train(_cfg(tiny_model_dir), records_file, out)
    return out, stats


def test_schedule_logging_and_total(safekey_run):
    out, stats = safekey_run
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and stats["grad_accum"] == 2
    for r in rows:
        assert set(r) >= LOG_NAMES
    early, late = rows[:2], rows[2:]
    for r in early:  # epoch 1 of 3: plain SFT
        assert r["qmm_loss"] == 0.0 and r["head_loss"] == 0.0 and r["head_acc_u"] is None and r["loss"] == r["lm_loss"]
    for r in late:  # last 2 epochs: both extra losses, and the logged loss is the total (not the LM part)
        assert r["qmm_loss"] > 0 and r["head_loss"] > 0 and 0 <= r["qmm_k_acc"] <= 1
        assert r["loss"] == pytest.approx(r["lm_loss"] + 0.2 * r["qmm_loss"] + 0.2 * r["head_loss"], rel=1e-5)
        assert r["loss"] > r["lm_loss"]


def test_saved_model_loads_plain_without_heads(safekey_run):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    out, _ = safekey_run
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("safekey_heads" in k for k in keys)
    assert not (out / "safekey_heads.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert type(model).__name__ == "LlamaForCausalLM" and not hasattr(model, "safekey_heads")
    assert (out / "train_config.yaml").exists() and (out / "tokenizer.json").exists()
    # checkpoints keep the heads beside the weights, so that resume restores them
    assert (out / "checkpoints" / "checkpoint-6" / "safekey_heads.safetensors").exists()


def test_resume_gives_the_same_curve(safekey_run, records_file, tiny_model_dir, tmp_path, capfd):
    out, _ = safekey_run
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-6")  # "killed" after step 4 (inside the extra-loss phase)
    with pytest.raises(SafekeyError, match="another config"):
        train(_cfg(tiny_model_dir, lr=2e-3), records_file, cut, resume=True)
    capfd.readouterr()
    train(_cfg(tiny_model_dir), records_file, cut, resume=True)
    err = capfd.readouterr().err
    assert "resuming from" in err and "missing keys" not in err  # the heads are restored, not missing
    a, b = _log(out), _log(cut)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a[4:], b[4:]):
        for k in ("loss", "lm_loss", "qmm_loss", "head_loss", "lr"):
            assert y[k] == pytest.approx(x[k], rel=1e-4), k


def test_lora_sft_saves_merged_plain_model(records_file, tiny_model_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(_cfg(tiny_model_dir, mode="sft", epochs=1, last_k_epochs=0, lora=True, lora_r=4), records_file, out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    with safe_open(str(Path(tiny_model_dir) / "model.safetensors"), "pt") as f:
        base = set(f.keys())
    assert keys == base  # merged: no lora_A/lora_B, no heads
    AutoModelForCausalLM.from_pretrained(str(out))
    assert _log(out)[0]["qmm_loss"] == 0.0


def test_cli_run_check_spans_inspect(records_file, tiny_model_dir, tmp_path):
    from safekey.cli.main import cli

    r = CliRunner().invoke(cli, ["train", "check-spans", str(records_file), "--model", str(tiny_model_dir)])
    assert r.exit_code == 0 and r.output.strip().endswith("spans aligned: 4/4"), r.output
    r = CliRunner().invoke(cli, ["train", "inspect", str(records_file), "--model", str(tiny_model_dir), "--index", "1"])
    assert r.exit_code == 0 and "legend:" in r.output and "‹K|+" in r.output and "‹query|-" in r.output, r.output
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["train", "run", str(records_file), "--model", str(tiny_model_dir), "--mode", "safekey",
                                 "-o", str(out), "--epochs", "1", "--max-length", "160", "--no-qmm", "--limit", "2",
                                 "--set", "effective_batch=2", "--set", "last_k_epochs=1"])
    assert r.exit_code == 0, r.output
    row = _log(out)[0]
    assert row["head_loss"] > 0 and row["qmm_loss"] == 0.0 and row["qmm_k_acc"] is None
    r = CliRunner().invoke(cli, ["train", "run", str(records_file), "--model", str(tiny_model_dir), "-o", str(out)])
    assert isinstance(r.exception, SafekeyError) and "already holds a training run" in str(r.exception)
    # #36: a run that crashed before its first checkpoint (its config and an empty log written, nothing
    # else) no longer blocks the same command: it starts afresh, saying so
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "train_config.yaml").write_text((out / "train_config.yaml").read_text())
    (crashed / "train_log.jsonl").write_text("")
    r = CliRunner().invoke(cli, ["train", "run", str(records_file), "--model", str(tiny_model_dir), "--mode", "safekey",
                                 "-o", str(crashed), "--epochs", "1", "--max-length", "160", "--no-qmm", "--limit", "2",
                                 "--set", "effective_batch=2", "--set", "last_k_epochs=1"])
    assert r.exit_code == 0, r.output
    assert (crashed / "train_stats.json").exists() and len(_log(crashed)) == 1


def test_bad_sharding_configs_are_one_line_errors(records_file, tiny_model_dir, tmp_path):
    """A broken FSDP config file names file:line; asking for DeepSpeed and FSDP at once is refused
    before any model is loaded."""
    from safekey.cli.main import cli

    bad = tmp_path / "fsdp.json"
    bad.write_text('{\n  "version": 2,\n  "reshard_after_forward": tru\n}\n')
    base = ["train", "run", str(records_file), "--model", str(tiny_model_dir), "-o", str(tmp_path / "o"), "--max-length", "160"]
    r = CliRunner().invoke(cli, [*base, "--set", f"fsdp={bad}"])
    assert isinstance(r.exception, SafekeyError) and str(r.exception).startswith(f"{bad}:3: not JSON"), r.exception
    with pytest.raises(ValueError, match="set one of them"):
        _cfg(tiny_model_dir, fsdp={"version": 2}, deepspeed={"zero_optimization": {"stage": 3}})
    assert not (tmp_path / "o" / "train_log.jsonl").exists()


def test_resume_skips_a_checkpoint_cut_mid_save(tmp_path):
    """kill -9 while checkpoint-3 was being written: resume from checkpoint-2 (the newest finished)."""
    from safekey.train.run import last_complete_checkpoint

    for n, done in ((1, True), (2, True), (3, False), (10, False)):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
        if done:
            (d / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert last_complete_checkpoint(tmp_path / "none") is None
