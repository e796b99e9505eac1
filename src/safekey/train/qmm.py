"""Query-Mask Modeling (SafeKey §4): predict K from U alone, with the query hidden from attention.

The second forward runs over [query, U, K] only — cut at K's end, since later tokens can never influence
K under a causal mask (the reference ran the full sequence: ~2× the cost for nothing).

Hiding. ``hide="prefix"`` ("everything before the assistant content") hides the system prompt, the
chat scaffolding and the user turn; ``hide="query"`` hides only the user text. Hidden tokens still sit at
their positions (RoPE positions of U/K are unchanged) but no non-hidden token can attend to them. Rows of
hidden tokens keep ordinary causal attention among themselves (never read by U/K; keeps every softmax
row non-empty, so no NaN).

Three implementations with identical maths (≤ 3e-7 apart in float32):
* ``packed`` (what ``auto`` picks for eager/sdpa on full-attention models): the QMM segment (the
  visible tokens of ``drop`` below, at their original positions) is appended to each row of the main
  forward, and a block-diagonal 4D mask keeps the two apart. One forward and one backward per
  micro-batch: every weight's gradient is computed once, and the segment's ~11 % of tokens ride in
  the main pass's large matrix multiplies instead of a second pass of small ones (that pass cost
  SafeKey 1.16× an SFT step; benchmarks/train_overhead.py).
* ``drop`` (the fallback for every other attention backend): remove the hidden tokens and pass the original
  ``position_ids``. It needs only a 2D padding mask, which every backend reads correctly (eager,
  sdpa, flash-attention, flex), and it runs over the visible tokens only — the cheapest exact path.
* ``mask``: a 4D mask (B, 1, T, T) — boolean for sdpa, additive float for eager. transformers passes a
  4D mask through untouched (masking_utils: "If the mask is already 4D, simply return as-is"), but
  other backends do not read it as a mask (flash-attention's unpadding indexes it; flex_attention
  adds a boolean mask to the scores), so it is refused for them.

The "w/o mask" ablation (``unmasked``) hides nothing: it needs only the 2D padding mask, for any
backend and implementation.
"""

from __future__ import annotations

import torch

from .spans import ASSISTANT, QUERY, TEMPLATE, K, U  # noqa: F401


def hidden_tokens(roles: torch.Tensor, hide: str) -> torch.Tensor:
    """(B, T) bool: tokens the QMM pass hides."""
    if hide == "query":
        return roles == QUERY
    return (roles == QUERY) | (roles == TEMPLATE)  # everything before the assistant content


def qmm_mask_4d(valid: torch.Tensor, hidden: torch.Tensor, *, unmasked: bool, dtype, boolean: bool) -> torch.Tensor:
    """(B, 1, T, T) mask; True/0.0 = may attend. valid: (B, T) non-padding tokens."""
    _B, T = valid.shape
    causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    allow = causal.unsqueeze(0) & valid.unsqueeze(1)  # key must be a real token
    if not unmasked:
        # a visible query row (U, K, ...) may not look at hidden keys
        allow = allow & ~(~hidden.unsqueeze(2) & hidden.unsqueeze(1))
    allow = allow | torch.eye(T, dtype=torch.bool, device=valid.device).unsqueeze(0)  # never an empty row
    allow = allow.unsqueeze(1)
    if boolean:
        return allow
    m = torch.zeros(allow.shape, dtype=dtype, device=valid.device)
    return m.masked_fill(~allow, torch.finfo(dtype).min)


def build_qmm_inputs(batch: dict, *, hide: str, unmasked: bool, impl: str, truncate: bool, dtype) -> dict:
    """Model inputs + K labels for the QMM pass. impl: "mask_bool" | "mask_float" | "drop"."""
    ids, roles, k_end = batch["input_ids"], batch["roles"], batch["k_end"]
    B, T = ids.shape
    L = int(k_end.max()) if truncate else T
    ids, roles = ids[:, :L], roles[:, :L]
    ar = torch.arange(L, device=ids.device).unsqueeze(0)
    valid = batch["attention_mask"][:, :L].bool() & (ar < k_end.unsqueeze(1) if truncate else True)
    labels = torch.where(roles == K, ids, torch.full_like(ids, -100))
    hidden = hidden_tokens(roles, hide) & valid
    if unmasked:  # nothing hidden: plain causal attention over the real tokens
        return {"input_ids": ids, "attention_mask": valid.long(), "position_ids": ar.expand(B, L), "labels": labels}
    if impl == "drop":
        keep = valid & ~hidden
        n = keep.sum(1)
        Lk = int(n.max())
        new_ids = torch.zeros(B, Lk, dtype=ids.dtype, device=ids.device)
        new_lab = torch.full((B, Lk), -100, dtype=ids.dtype, device=ids.device)
        pos = torch.zeros(B, Lk, dtype=torch.long, device=ids.device)
        am = torch.zeros(B, Lk, dtype=torch.long, device=ids.device)
        for b in range(B):
            idx = keep[b].nonzero().squeeze(1)
            m = idx.numel()
            new_ids[b, :m], new_lab[b, :m], pos[b, :m], am[b, :m] = ids[b, idx], labels[b, idx], idx, 1
            if m < Lk:  # padding continues the positions so flash/sdpa see a monotone sequence
                pos[b, m:] = torch.arange(int(idx[-1]) + 1, int(idx[-1]) + 1 + Lk - m, device=ids.device)
        return {"input_ids": new_ids, "attention_mask": am, "position_ids": pos, "labels": new_lab}
    mask = qmm_mask_4d(valid, hidden, unmasked=unmasked, dtype=dtype, boolean=(impl == "mask_bool"))
    pos = ar.expand(B, L)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "labels": labels}


def sliding_window_layers(config) -> bool:
    """Whether some layer attends through a sliding window (a 4D mask given to the model replaces it)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    kinds = getattr(cfg, "layer_types", None)
    if kinds:
        return any(k != "full_attention" for k in kinds)
    return bool(getattr(cfg, "sliding_window", None)) and bool(getattr(cfg, "use_sliding_window", True))


def pack_segments(main: dict, seg: dict, *, boolean: bool, dtype) -> dict:
    """One forward for the LM pass and the QMM pass: row b = [main_b (T tokens) | seg_b (S tokens)].

    main: input_ids + 2D attention_mask (positions 0..T-1, as the model would assign); seg: the
    ``drop`` QMM inputs (input_ids, 2D attention_mask, position_ids). The mask is block-diagonal:
    main tokens see main tokens causally, segment tokens see segment tokens causally, never across,
    so each block computes exactly what its own forward would. (B, 1, T+S, T+S): True/0.0 = attend."""
    ids_m, am_m = main["input_ids"], main["attention_mask"].bool()
    ids_s, am_s, pos_s = seg["input_ids"], seg["attention_mask"].bool(), seg["position_ids"]
    B, T = ids_m.shape
    S = ids_s.shape[1]
    dev = ids_m.device
    allow = torch.zeros(B, T + S, T + S, dtype=torch.bool, device=dev)
    allow[:, :T, :T] = torch.ones(T, T, dtype=torch.bool, device=dev).tril().unsqueeze(0) & am_m.unsqueeze(1)
    allow[:, T:, T:] = torch.ones(S, S, dtype=torch.bool, device=dev).tril().unsqueeze(0) & am_s.unsqueeze(1)
    allow |= torch.eye(T + S, dtype=torch.bool, device=dev).unsqueeze(0)  # padding rows: never an empty row
    allow = allow.unsqueeze(1)
    if boolean:
        mask = allow
    else:
        mask = torch.zeros(allow.shape, dtype=dtype, device=dev).masked_fill(~allow, torch.finfo(dtype).min)
    pos_m = torch.arange(T, device=dev).unsqueeze(0).expand(B, T)
    return {"input_ids": torch.cat([ids_m, ids_s], 1), "attention_mask": mask,
            "position_ids": torch.cat([pos_m, pos_s.to(pos_m.dtype)], 1)}


def qmm_loss_per_example(logits: torch.Tensor, labels: torch.Tensor):
    """(per-example mean CE over K tokens (B,), correct K predictions, K token count). Causal shift inside."""
    lg = logits[:, :-1].float()
    lb = labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(lg.transpose(1, 2), lb, ignore_index=-100, reduction="none")
    m = lb != -100
    n = m.sum(1)
    per_ex = (ce * m).sum(1) / n.clamp(min=1)
    correct = ((lg.argmax(-1) == lb) & m).sum()
    return per_ex, correct, m.sum()
