"""A training run that cannot change the weights says so: with one optimizer step and any warmup,
the only step runs at learning rate 0 (transformers' linear warmup starts at 0), and the "trained"
model is the start model — which a results table would otherwise report as a method (issue #29:
intervened DPO on 2 pairs trained nothing and evaluated, item for item, as the base model)."""

from __future__ import annotations

import json

import pytest
import torch

from safekey.paths import resource


@pytest.mark.parametrize("warmup", [0.1, 0.0])
def test_one_step_of_warmup_is_reported_as_no_update(tmp_path, tiny_model_dir, warmup, capfd):
    from safetensors.torch import load_file

    from safekey.train.config import TrainConfig
    from safekey.train.run import train

    cfg = TrainConfig(model=str(tiny_model_dir), mode="sft", epochs=1, max_length=192, limit=4, effective_batch=4,
                      per_device_batch=4, lr=1e-3, warmup_ratio=warmup, save_total_limit=1)
    stats = train(cfg, resource("starter/train.jsonl"), tmp_path / "out", progress=False)
    assert stats["global_step"] == 1
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    written = json.loads((tmp_path / "out" / "train_stats.json").read_text())
    if warmup:
        assert unchanged and "ran at learning rate 0" in written["warnings"][0]
        assert "warning: every optimizer step (1) ran at learning rate 0" in capfd.readouterr().err
    else:
        assert not unchanged and "warnings" not in written
