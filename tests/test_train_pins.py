"""Pins on the SafeKey loss code (issue #13): exact token sets, exact pooled values and every loss
term recomputed by hand, so that each silent mutant found by hand-mutation testing now fails a test:
hiding only the query under "prefix"; QMM labels on U instead of K; the pre-K pool including K's
first token; a one-token U pool; θ and 1−θ swapped; the head term weighted twice; a 90 % interval
reported as 95 %; head/QMM terms not scaled by the world size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_spans import star1_records
from torch.nn import functional as F

from safekey.metrics import bootstrap_ci, paired_delta
from safekey.train.config import TrainConfig
from safekey.train.heads import head_loss_per_example, span_masks
from safekey.train.qmm import build_qmm_inputs, hidden_tokens
from safekey.train.spans import ASSISTANT, QUERY, TEMPLATE, K, U
from safekey.train.trainer import loss_scales

# one sequence: <sys><user>query</user><asst> U U K K rest ; then padding
ROLES = torch.tensor([[TEMPLATE, TEMPLATE, QUERY, QUERY, QUERY, TEMPLATE, U, U, U, K, K, ASSISTANT, TEMPLATE, TEMPLATE]])


def test_hidden_token_sets_are_exact():
    assert hidden_tokens(ROLES, "prefix")[0].nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 4, 5, 12, 13]
    assert hidden_tokens(ROLES, "query")[0].nonzero().squeeze(1).tolist() == [2, 3, 4]


def _batch(T=14, pad=2):
    ids = torch.arange(100, 100 + T).unsqueeze(0)
    am = torch.ones(1, T, dtype=torch.long)
    am[0, T - pad :] = 0
    return {"input_ids": ids, "attention_mask": am, "roles": ROLES, "k_end": torch.tensor([11]),
            "u_start": torch.tensor([6]), "u_end": torch.tensor([9]), "k_start": torch.tensor([9])}


@pytest.mark.parametrize("impl", ["drop", "mask_bool", "mask_float"])
def test_qmm_labels_are_exactly_k_and_the_pass_is_cut_at_k(impl):
    q = build_qmm_inputs(_batch(), hide="prefix", unmasked=False, impl=impl, truncate=True, dtype=torch.float32)
    labelled = q["input_ids"][q["labels"] != -100].tolist()
    assert labelled == [109, 110]  # the two K tokens, nothing of U
    if impl == "drop":  # only the visible tokens run: U and K, at their original positions
        assert q["input_ids"][0].tolist() == [106, 107, 108, 109, 110]
        assert q["position_ids"][0].tolist() == [6, 7, 8, 9, 10]
        assert q["attention_mask"].dim() == 2
    else:
        assert q["input_ids"].shape[1] == 11
        m = q["attention_mask"][0, 0]
        allowed = m if m.dtype == torch.bool else (m == 0)
        assert allowed[9].nonzero().squeeze(1).tolist() == [6, 7, 8, 9]  # K's first token sees U and itself only


@pytest.mark.parametrize("impl", ["drop", "mask_bool", "mask_float"])
def test_unmasked_ablation_uses_a_plain_2d_padding_mask(impl):
    """Defect 3: qmm_unmasked built a 4D float mask that flash-attention cannot read."""
    q = build_qmm_inputs(_batch(), hide="prefix", unmasked=True, impl=impl, truncate=True, dtype=torch.float32)
    assert q["attention_mask"].dim() == 2 and q["attention_mask"][0].tolist() == [1] * 11
    assert q["input_ids"][q["labels"] != -100].tolist() == [109, 110]


def test_span_masks_are_exact():
    u, pre = span_masks(14, torch.tensor([6]), torch.tensor([9]), torch.tensor([9]))
    assert u[0].nonzero().squeeze(1).tolist() == [6, 7, 8]
    assert pre[0].nonzero().squeeze(1).tolist() == list(range(9))  # K's first token (9) is not in the pool


def test_theta_weights_the_u_path():
    lu, lp, y = torch.tensor([0.3, -1.2]), torch.tensor([2.0, 0.5]), torch.tensor([1, 0])
    got = head_loss_per_example(lu, lp, y, theta=0.3)
    b1 = F.binary_cross_entropy_with_logits(lu, y.float(), reduction="none")
    b2 = F.binary_cross_entropy_with_logits(lp, y.float(), reduction="none")
    assert torch.allclose(got, 0.3 * b1 + 0.7 * b2)
    assert not torch.allclose(got, 0.7 * b1 + 0.3 * b2)


def test_world_size_scales_the_extra_terms_whatever_the_token_flag():
    """Defect 6: with average_tokens_across_devices=False the head/QMM terms were W times too small."""
    assert loss_scales(8, False) == (1, 8)
    assert loss_scales(8, True) == (8, 8)
    assert loss_scales(1, True) == (1, 1)


def test_intervals_are_95_percent():
    x = np.random.default_rng(3).random(40)
    _point, lo, hi = bootstrap_ci(x, seed=7)
    rng = np.random.default_rng(7)
    means = x[rng.integers(0, x.size, size=(2000, x.size))].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    d = paired_delta(x, x + 0.1, seed=7)
    assert d["ci"][1] - d["ci"][0] == pytest.approx(0.0, abs=1e-12)  # a constant shift has no spread


@pytest.fixture
def active_trainer(shared, smol_tokenizer, tiny_model_dir, tmp_path):
    from safekey.train.run import build_trainer

    cfg = TrainConfig(model=str(tiny_model_dir), mode="safekey", epochs=1, last_k_epochs=1, effective_batch=4,
                      per_device_batch=4, max_length=160, theta=0.3, head_weight=0.2, qmm_weight=0.2)
    recs = star1_records(shared, 4)
    for i, r in enumerate(recs):
        r.unsafe = i % 2
    trainer, _, _ = build_trainer(cfg, recs, tmp_path)
    return trainer


def test_total_loss_is_each_term_recomputed_by_hand(active_trainer):
    t = active_trainer
    t.state.max_steps = 1
    t.model.train()
    it = iter(t.get_train_dataloader())
    [b], n_items = t.get_batch_samples(it, 1, t.args.device)
    batch = {k: v.clone() for k, v in b.items()}
    with torch.no_grad():
        total = t.compute_loss(t.model, dict(b), num_items_in_batch=n_items).item()
        logged_head = t.meter.sums["head"].item()
        model = t.model
        ids, am, lab = batch["input_ids"], batch["attention_mask"], batch["labels"]
        out = model.model(input_ids=ids, attention_mask=am)
        h = out.last_hidden_state
        logits = model.lm_head(h)
        lm = F.cross_entropy(logits[:, :-1].transpose(1, 2), lab[:, 1:], ignore_index=-100, reduction="sum") / int(
            (lab[:, 1:] != -100).sum())
        heads = t.heads()
        head_terms = []
        for i in range(ids.shape[0]):
            u0, u1, k0 = int(batch["u_start"][i]), int(batch["u_end"][i]), int(batch["k_start"][i])
            pu = h[i, u0:u1].mean(0)
            pk = h[i, :k0][am[i, :k0].bool()].mean(0)
            y = float(batch["unsafe"][i])
            b1 = F.binary_cross_entropy_with_logits(heads.u_head(pu).squeeze(), torch.tensor(y))
            b2 = F.binary_cross_entropy_with_logits(heads.pre_k_head(pk).squeeze(), torch.tensor(y))
            head_terms.append(0.3 * b1 + 0.7 * b2)
        head = torch.stack(head_terms).mean()
        # QMM by hand: each example alone, query + template removed, U/K at their own positions
        qmm_terms = []
        for i in range(ids.shape[0]):
            keep = [j for j in range(int(batch["k_end"][i])) if int(batch["roles"][i, j]) in (U, K, ASSISTANT)]
            sub = ids[i, keep].unsqueeze(0)
            lg = model(input_ids=sub, position_ids=torch.tensor([keep])).logits[0]
            is_k = [int(batch["roles"][i, j]) == K for j in keep]
            ce = [F.cross_entropy(lg[p - 1 : p], sub[0, p : p + 1]) for p in range(1, len(keep)) if is_k[p]]
            qmm_terms.append(torch.stack(ce).mean())
        qmm = torch.stack(qmm_terms).mean()
    assert logged_head == pytest.approx(head.item(), rel=1e-4)
    assert total == pytest.approx((lm + 0.2 * head + 0.2 * qmm).item(), rel=1e-4)


@pytest.mark.parametrize("env", ["ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"])
def test_sharding_that_the_stack_ignores_is_refused(shared, tiny_model_dir, tmp_path, monkeypatch, env):
    """On CPU accelerate runs a ZeRO-3 / FSDP launch unsharded; that must not train silently."""
    from safekey.train.run import build_trainer
    from safekey.types import SafekeyError

    monkeypatch.setenv(env, "true")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    cfg = TrainConfig(model=str(tiny_model_dir), mode="safekey", epochs=1, last_k_epochs=1, effective_batch=1, max_length=160)
    with pytest.raises(SafekeyError, match=r"was requested .*nothing would be sharded"):
        build_trainer(cfg, star1_records(shared, 1), tmp_path)
