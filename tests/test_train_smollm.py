"""The real SmolLM2-135M trained a few steps in safekey mode on real STAR-1 records (CPU)."""

from __future__ import annotations

import math

import pytest
from test_train_spans import star1_records

from safekey.train.config import TrainConfig


@pytest.mark.smollm
def test_smollm2_safekey_losses_finite_and_decreasing(shared, smollm2_dir, tmp_path):
    import json

    from safekey.train.config import LOG_FILE
    from safekey.train.run import build_trainer

    # one record seen 3 times; extra losses on from the first step
    cfg = TrainConfig(model=str(smollm2_dir), mode="safekey", epochs=3, last_k_epochs=3, effective_batch=1,
                      per_device_batch=1, max_length=100, lr=2e-4, warmup_ratio=0.0, lr_scheduler="constant",
                      save_steps=1000, save_total_limit=1)
    trainer, _tok, stats = build_trainer(cfg, star1_records(shared, 1), tmp_path)
    assert stats["examples"] == 1
    trainer.train()
    rows = [json.loads(l) for l in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert len(rows) == 3
    for k in ("loss", "lm_loss", "qmm_loss", "head_loss"):
        vals = [r[k] for r in rows]
        assert all(math.isfinite(v) and v > 0 for v in vals), (k, vals)
        assert vals[-1] < vals[0], (k, vals)
