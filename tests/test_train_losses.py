"""QMM masking semantics, DPSH gradients and loss normalisation on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from test_train_spans import star1_records

from safekey.train.config import TrainConfig
from safekey.train.data import Collator
from safekey.train.qmm import build_qmm_inputs, qmm_loss_per_example
from safekey.train.spans import QUERY, encode_record


def _model(path, attn):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation=attn)
    return m.eval()


def _batch(tok, recs):
    feats = [encode_record(tok, r, needs_spans=True, max_length=160).features() for r in recs]
    return Collator(tok.pad_token_id)(feats)


def _k_logits(model, batch, impl, hide="prefix", unmasked=False, truncate=True):
    q = build_qmm_inputs(batch, hide=hide, unmasked=unmasked, impl=impl, truncate=truncate, dtype=torch.float32)
    labels = q.pop("labels")
    with torch.no_grad():
        logits = model(**q).logits
    return [logits[b][labels[b] != -100] for b in range(labels.shape[0])], logits, labels


def _swap_query(batch, tok):
    """Same batch, every query token replaced by another real token (lengths unchanged)."""
    b = {k: v.clone() for k, v in batch.items()}
    q = b["roles"] == QUERY
    b["input_ids"][q] = tok.convert_tokens_to_ids("Ġbanana")
    return b


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_query_tokens_cannot_reach_k(shared, smol_tokenizer, tiny_model_dir, attn):
    model = _model(tiny_model_dir, attn)
    recs = star1_records(shared, 3)
    batch = _batch(smol_tokenizer, recs)
    other = _swap_query(batch, smol_tokenizer)
    impl = "mask_float" if attn == "eager" else "mask_bool"
    for hide in ("prefix", "query"):
        a, _, _ = _k_logits(model, batch, impl, hide)
        b, _, _ = _k_logits(model, other, impl, hide)
        for x, y in zip(a, b):
            assert x.shape[0] > 0 and torch.allclose(x, y, atol=1e-5)
    # the dropped-token implementation (for flash-attention) computes the same K logits
    d, _, _ = _k_logits(model, batch, "drop")
    for x, y in zip(_k_logits(model, batch, impl)[0], d):
        assert torch.allclose(x, y, atol=1e-4)
    # control: without the mask the query does change K (so the test above can fail)
    a, _, _ = _k_logits(model, batch, impl, unmasked=True)
    b, _, _ = _k_logits(model, other, impl, unmasked=True)
    assert not all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))


def test_qmm_loss_ignores_tokens_after_k(shared, smol_tokenizer, tiny_model_dir):
    model = _model(tiny_model_dir, "sdpa")
    batch = _batch(smol_tokenizer, star1_records(shared, 3))
    losses = []
    for truncate in (True, False):
        q = build_qmm_inputs(batch, hide="prefix", unmasked=False, impl="mask_bool", truncate=truncate, dtype=torch.float32)
        labels = q.pop("labels")
        with torch.no_grad():
            losses.append(qmm_loss_per_example(model(**q).logits, labels)[0])
        if truncate:
            assert q["input_ids"].shape[1] == int(batch["k_end"].max()) < batch["input_ids"].shape[1]
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    # and the same record, cut right after K, gives the same QMM loss as the full record
    rec = star1_records(shared, 1)[0]
    full = _batch(smol_tokenizer, [rec])
    cut = {k: (v[:, : int(full["k_end"][0])] if v.dim() == 2 else v) for k, v in full.items()}
    vals = []
    for b in (full, cut):
        q = build_qmm_inputs(b, hide="prefix", unmasked=False, impl="mask_bool", truncate=False, dtype=torch.float32)
        labels = q.pop("labels")
        with torch.no_grad():
            vals.append(qmm_loss_per_example(model(**q).logits, labels)[0])
    assert torch.allclose(vals[0], vals[1], atol=1e-5) and vals[0].item() > 0


@pytest.fixture
def tiny_trainer(shared, smol_tokenizer, tiny_model_dir, tmp_path):
    from safekey.train.run import build_trainer

    cfg = TrainConfig(model=str(tiny_model_dir), mode="safekey", epochs=1, last_k_epochs=1, effective_batch=4,
                      per_device_batch=2, max_length=160, lr=1e-3)
    trainer, _tok, _ = build_trainer(cfg, star1_records(shared, 4), tmp_path)
    return trainer


def _one_accumulated_step(trainer):
    """Run compute_loss on every micro-batch of the first optimizer step (what training_step does)."""
    trainer.state.max_steps = 1
    trainer.model.train()
    it = iter(trainer.get_train_dataloader())
    batches, n_items = trainer.get_batch_samples(it, trainer.args.gradient_accumulation_steps, trainer.args.device)
    total = 0.0
    for b in batches:
        loss = trainer.compute_loss(trainer.model, dict(b), num_items_in_batch=n_items)
        loss.backward()
        total += loss.item()
    return batches, total


def test_heads_train_weights_and_biases(tiny_trainer):
    heads = tiny_trainer.heads()
    _one_accumulated_step(tiny_trainer)
    for p in (heads.u_head.weight, heads.u_head.bias, heads.pre_k_head.weight, heads.pre_k_head.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    opt = tiny_trainer.create_optimizer()
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert {id(p) for p in heads.parameters()} <= in_opt  # the reference never trained the biases
    # gradients reach the model through the head (not detached)
    assert tiny_trainer.model.model.norm.weight.grad.abs().sum() > 0


def test_lm_loss_is_the_full_batch_token_mean(tiny_trainer):
    """Over an accumulated step the LM terms add up to the token-mean over the whole batch, as transformers does."""
    tiny_trainer.skcfg = tiny_trainer.skcfg.model_copy(update={"head": False, "qmm": False})
    batches, total = _one_accumulated_step(tiny_trainer)
    assert len(batches) == 2 and tiny_trainer.args.gradient_accumulation_steps == 2
    model = tiny_trainer.model
    ce_sum, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
            lab = b["labels"][:, 1:]
            ce_sum += torch.nn.functional.cross_entropy(logits.transpose(1, 2), lab, ignore_index=-100, reduction="sum").item()
            n += int((lab != -100).sum())
    assert total == pytest.approx(ce_sum / n, rel=1e-5)


def test_qmm_under_flex_attention_drops_tokens_and_refuses_a_4d_mask(shared, smol_tokenizer, tiny_model_dir, tmp_path):
    """Defect 4: a 4D boolean mask is not a mask to flex_attention (here it even aborts the process,
    so that is not re-enacted). The default `drop` path needs only a 2D mask and gives the K logits
    of sdpa + the 4D mask; asking for the mask under flex is a one-line refusal."""
    from safekey.train.run import build_trainer
    from safekey.types import SafekeyError

    batch = _batch(smol_tokenizer, star1_records(shared, 3))
    ref, _, _ = _k_logits(_model(tiny_model_dir, "sdpa"), batch, "mask_bool")
    flex = _model(tiny_model_dir, "flex_attention")
    got, _, _ = _k_logits(flex, batch, "drop")
    for x, y in zip(ref, got):
        assert torch.allclose(x, y, atol=1e-4)
    cfg = TrainConfig(model=str(tiny_model_dir), mode="safekey", epochs=1, last_k_epochs=1, effective_batch=1,
                      max_length=160, attn_implementation="flex_attention")
    trainer, _, _ = build_trainer(cfg, star1_records(shared, 1), tmp_path / "a")
    assert trainer._qmm_impl() == "drop"
    trainer.skcfg = cfg.model_copy(update={"qmm_attention": "mask"})
    with pytest.raises(SafekeyError, match="needs eager or sdpa attention, not 'flex_attention'"):
        trainer._qmm_impl()


def _grads_after_one_step(trainer, qmm_attention, loss_impl):
    trainer.skcfg = trainer.skcfg.model_copy(update={"qmm_attention": qmm_attention, "loss_impl": loss_impl})
    trainer.model.zero_grad(set_to_none=True)
    seen = []
    orig = trainer.model.forward

    def spy(*a, **kw):
        seen.append(kw["input_ids"].shape[1])
        return orig(*a, **kw)

    trainer.model.forward = spy
    try:
        _, total = _one_accumulated_step(trainer)
    finally:
        trainer.model.forward = orig
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return total, grads, seen, trainer.meter.read(trainer.state.global_step)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("loss_impl", ["lean", "full"])
def test_packed_qmm_is_the_two_pass_loss_in_one_forward(shared, smol_tokenizer, tiny_model_dir, tmp_path, attn, loss_impl):
    """The QMM segment packed behind a block mask gives the losses, K accuracy and every gradient of
    the two-pass `drop` implementation, in one forward per micro-batch (what made SafeKey 1.16× SFT)."""
    from safekey.train.run import build_trainer

    cfg = TrainConfig(model=str(tiny_model_dir), mode="safekey", epochs=1, last_k_epochs=1, effective_batch=4,
                      per_device_batch=2, max_length=160, lr=1e-3, attn_implementation=attn)
    trainer, _, _ = build_trainer(cfg, star1_records(shared, 4), tmp_path)
    assert trainer._qmm_impl() == "packed"  # what auto picks for eager / sdpa
    t_drop, g_drop, calls_drop, log_drop = _grads_after_one_step(trainer, "drop", loss_impl)
    t_pack, g_pack, calls_pack, log_pack = _grads_after_one_step(trainer, "auto", loss_impl)
    assert len(calls_drop) == 4 and len(calls_pack) == 2  # two micro-batches: 2 passes each vs 1
    assert all(p > d for p, d in zip(calls_pack, calls_drop[::2]))  # main + segment in one row
    assert t_pack == pytest.approx(t_drop, rel=1e-5)
    for k in ("lm_loss", "head_loss", "qmm_loss"):
        assert log_pack[k] == pytest.approx(log_drop[k], rel=1e-5) and log_drop[k] > 0
    assert log_pack["qmm_k_acc"] == log_drop["qmm_k_acc"]
    assert g_pack.keys() == g_drop.keys() and any(k.startswith("safekey_heads") for k in g_pack)
    for k, g in g_drop.items():
        assert torch.allclose(g_pack[k], g, atol=1e-6, rtol=1e-4), k


def test_packed_qmm_only_where_a_4d_mask_is_exact(tiny_trainer):
    """auto falls back to two passes (drop) for a sliding-window model; asking for packed there is refused."""
    from safekey.types import SafekeyError

    core = tiny_trainer.model
    assert tiny_trainer._qmm_impl() == "packed"
    core.config.sliding_window, core.config.use_sliding_window = 64, True
    try:
        assert tiny_trainer._qmm_impl() == "drop"
        tiny_trainer.skcfg = tiny_trainer.skcfg.model_copy(update={"qmm_attention": "packed"})
        with pytest.raises(SafekeyError, match="would override its sliding windows"):
            tiny_trainer._qmm_impl()
    finally:
        core.config.sliding_window, core.config.use_sliding_window = None, None
