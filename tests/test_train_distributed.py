"""The 2-process path (DDP over gloo on CPU): gradient sync, cross-rank example counts and logging."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

from test_train_spans import first_sentence_spans

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_safekey_run(shared, tiny_model_dir, tmp_path):
    rows = json.loads(shared("star1/STAR-1.json").read_text())[:8]
    data = tmp_path / "d.jsonl"
    with data.open("w") as f:
        for i, r in enumerate(rows):
            u, k = first_sentence_spans(r["response"])
            rec = {"id": r["id"], "question": r["question"], "response": r["response"], "u_end": u, "k_end": k, "unsafe": i % 2}
            f.write(json.dumps(rec) + "\n")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"),
        "--main_process_port", str(_free_port()), "-m", "safekey.cli.main", "train", "run", str(data),
        "--model", str(tiny_model_dir), "--mode", "safekey", "-o", str(out), "--epochs", "2", "--max-length", "256",
        "--set", "effective_batch=4", "--set", "per_device_batch=1", "--set", "last_k_epochs=1", "--set", "logging_steps=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4]  # 8 examples / (2 ranks x 1 x 2 accumulation) x 2 epochs
    assert [row["extras_active"] for row in log] == [False, False, True, True]
    for row in log:
        assert math.isfinite(row["loss"])
        total = row["lm_loss"] + 0.2 * row["qmm_loss"] + 0.2 * row["head_loss"]
        assert abs(row["loss"] - total) < 1e-3 * max(1.0, abs(total)), row
    assert all(row["qmm_loss"] > 0 and row["head_loss"] > 0 for row in log[2:])
    from transformers import AutoModelForCausalLM
    from safetensors.torch import load_file

    assert not any("safekey_heads" in k for k in load_file(str(out / "model.safetensors")))
    AutoModelForCausalLM.from_pretrained(str(out))


def test_fsdp_config_on_cpu_is_refused_not_run_twice(shared, tiny_model_dir, tmp_path):
    """transformers runs FSDP only on accelerators; on CPU each rank would silently train alone."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs/accelerate/fsdp.yaml").read_text())
    cfg.update(num_processes=2, use_cpu=True, mixed_precision="no")
    (tmp_path / "fsdp_cpu.yaml").write_text(yaml.safe_dump(cfg))
    row = json.loads(shared("star1/STAR-1.json").read_text())[0]
    u, k = first_sentence_spans(row["response"])
    (tmp_path / "d.jsonl").write_text(json.dumps({**{x: row[x] for x in ("id", "question", "response")},
                                                  "u_end": u, "k_end": k, "unsafe": 1}) + "\n")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp_cpu.yaml"),
        "--main_process_port", str(_free_port()), "-m", "safekey.cli.main", "train", "run", str(tmp_path / "d.jsonl"),
        "--model", str(tiny_model_dir), "--mode", "safekey", "-o", str(tmp_path / "out"), "--max-length", "256",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert r.returncode != 0
    assert "launched as 2 processes, but transformers runs this as world size 1" in r.stderr + r.stdout
    assert not (tmp_path / "out" / "model.safetensors").exists()
