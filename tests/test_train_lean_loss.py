"""The lean loss path (labelled positions through lm_head in checkpointed chunks) equals the
full-logits path: losses and gradients, for the LM term alone and for a whole SafeKey step."""

from __future__ import annotations

import pytest
import torch
from test_train_spans import star1_records

from safekey.train.config import TrainConfig
from safekey.train.lean_loss import causal_lm_loss, per_example_ce
from safekey.train.qmm import qmm_loss_per_example


def test_chunked_ce_equals_transformers_loss_and_its_gradients():
    torch.manual_seed(0)
    B, T, H, V = 3, 37, 16, 1000
    head = torch.nn.Linear(H, V, bias=False)
    hidden = torch.randn(B, T, H, requires_grad=True)
    labels = torch.randint(0, V, (B, T))
    labels[:, :9] = -100
    labels[1, 30:] = -100
    from transformers.loss.loss_utils import ForCausalLMLoss

    n = int((labels[:, 1:] != -100).sum())
    full = ForCausalLMLoss(head(hidden), labels, vocab_size=V, num_items_in_batch=torch.tensor(n))
    g_full = torch.autograd.grad(full, [hidden, head.weight])
    for chunk in (7, 64, 10_000):
        lean = causal_lm_loss(hidden, labels, head, torch.tensor(n), chunk=chunk)
        g_lean = torch.autograd.grad(lean, [hidden, head.weight])
        assert lean.item() == pytest.approx(full.item(), rel=1e-6)
        for a, b in zip(g_full, g_lean):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # the QMM per-example form too
    pe_full, ok_full, cnt_full = qmm_loss_per_example(head(hidden), labels)
    pe_lean, ok_lean, cnt_lean = per_example_ce(hidden, labels, head, chunk=11)
    assert torch.allclose(pe_full, pe_lean, rtol=1e-6) and int(ok_full) == int(ok_lean) and int(cnt_full) == int(cnt_lean)


def _step(shared, tiny_model_dir, tmp_path, impl):
    from safekey.train.run import build_trainer

    torch.manual_seed(0)
    cfg = TrainConfig(model=str(tiny_model_dir), mode="safekey", epochs=1, last_k_epochs=1, effective_batch=4,
                      per_device_batch=2, max_length=160, loss_impl=impl, loss_chunk=50, gradient_checkpointing=True)
    recs = star1_records(shared, 4)
    for i, r in enumerate(recs):
        r.unsafe = i % 2
    trainer, _, _ = build_trainer(cfg, recs, tmp_path / impl)
    trainer.state.max_steps = 1
    trainer.model.train()
    trainer.model.activation_checkpointing_enable()
    it = iter(trainer.get_train_dataloader())
    batches, n_items = trainer.get_batch_samples(it, 2, trainer.args.device)
    total = 0.0
    for b in batches:
        loss = trainer.compute_loss(trainer.model, dict(b), num_items_in_batch=n_items)
        loss.backward()
        total += loss.item()
    grads = {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
    return total, grads, {k: v.item() for k, v in trainer.meter.sums.items()}


def test_a_safekey_step_is_the_same_on_both_paths(shared, tiny_model_dir, tmp_path):
    t_full, g_full, acc_full = _step(shared, tiny_model_dir, tmp_path, "full")
    t_lean, g_lean, acc_lean = _step(shared, tiny_model_dir, tmp_path, "lean")
    assert t_lean == pytest.approx(t_full, rel=1e-5)
    for k in ("lm", "head", "qmm", "qmm_ok", "qmm_n"):
        assert acc_lean[k] == pytest.approx(acc_full[k], rel=1e-5), k
    assert g_full.keys() == g_lean.keys() and any("safekey_heads" in k for k in g_full)
    for k in g_full:
        assert torch.allclose(g_full[k], g_lean[k], rtol=1e-4, atol=1e-6), k
