"""Cross-entropy without full logits: only labelled positions go through ``lm_head``, in chunks.

Why: at 8,192 tokens × 151,936 vocabulary the LM logits of one sequence are 2.5 GB in bf16, 5 GB
more for the float32 copy the loss makes, plus their gradient — and the QMM pass builds another
logits tensor. Here the model's forward stops at its last hidden state (``logits_to_keep=1``: one
position through ``lm_head``, kept only so the forward's output has its usual shape), the
positions whose next token is labelled are gathered, and each chunk of them is projected and
scored inside ``torch.utils.checkpoint``: its logits live only while that chunk is computed, in
the forward and again in the backward. Same maths as transformers' ``ForCausalLMLoss`` (float32
logits, sum over labelled tokens / ``num_items_in_batch``), so losses and gradients equal the
full-logits path to float rounding (tests/test_train_lean_loss.py). The ``lm_head`` module itself
is called (not its weight), so tied embeddings, LoRA on the head and ZeRO-3's gathering hooks all
work as in the model's own forward.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


class FunctionalHead:
    """``lm_head`` applied as a function of its current weight, not called as a module.

    Why: under FSDP2 the output layer is its own shard unit (accelerate carves [final norm,
    lm_head] out, unsharded after the forward). Every *module call* arms FSDP's post-backward hook
    on its input, so the first chunk's backward would reduce-scatter and reshard the layer while
    the other chunks (and the final norm) still need the full weight: freed storage, a segfault on
    CPU. A functional call leaves the hooks of the forward's own call in charge: the gradient of
    every chunk accumulates into the unsharded weight, reduced once after the norm's backward."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    @property
    def weight(self):
        return self.module.weight

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import DTensor

        w, b = self.module.weight, getattr(self.module, "bias", None)
        if isinstance(w, DTensor):
            from ..types import SafekeyError

            raise SafekeyError("FSDP resharded lm_head after the forward (this accelerate does not keep the output "
                               "layer unsharded), so the lean loss cannot project outside it; use --set loss_impl=full")
        return F.linear(h, w, b)


def _chunk_ce(lm_head: torch.nn.Module, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(lm_head(h).float(), target, reduction="none")


def _chunk_ce_hits(lm_head: torch.nn.Module, h: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CE and the count of correct next-token predictions from ONE projection (QMM's K accuracy used
    to project its tokens a second time)."""
    logits = lm_head(h).float()
    return F.cross_entropy(logits, target, reduction="none"), (logits.detach().argmax(-1) == target).sum()


def labelled_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch index, position t, target labels[b, t+1]) of every position whose next token is labelled."""
    nxt = labels[:, 1:]
    b, t = (nxt != -100).nonzero(as_tuple=True)
    return b, t, nxt[b, t]


def _zero3_frozen(lm_head: torch.nn.Module) -> bool:
    """A frozen lm_head partitioned by ZeRO-3 (LoRA under ZeRO-3): DeepSpeed does not gather it again
    when the checkpointed chunk is recomputed in the backward pass (it arrives with 0 elements:
    torch's CheckpointError), so those chunks keep their logits instead (more memory, same values)."""
    w = getattr(lm_head, "weight", None)
    return w is not None and hasattr(w, "ds_id") and not w.requires_grad


def token_ce(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module, chunk: int = 512, hits: list | None = None):
    """Per-token CE (float32, with grad) of the next-token targets, and the batch index of each;
    `hits`, when given, receives each chunk's count of correct argmax predictions."""
    b, t, target = labelled_positions(labels)
    h = hidden[b, t]
    parts = []
    recompute = torch.is_grad_enabled() and not _zero3_frozen(lm_head)
    fn = _chunk_ce_hits if hits is not None else _chunk_ce
    for i in range(0, h.shape[0], chunk):
        hs, ts = h[i : i + chunk], target[i : i + chunk]
        got = checkpoint(fn, lm_head, hs, ts, use_reentrant=False) if recompute else fn(lm_head, hs, ts)
        if hits is not None:
            got, n = got
            hits.append(n)
        parts.append(got)
    ce = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    return ce, b, target


def causal_lm_loss(hidden, labels, lm_head, num_items_in_batch=None, chunk: int = 512) -> torch.Tensor:
    """``ForCausalLMLoss`` from the last hidden state: Σ CE / num_items_in_batch (else the token mean)."""
    ce, _, _ = token_ce(hidden, labels, lm_head, chunk)
    if num_items_in_batch is None:
        return ce.sum() / max(1, ce.numel())
    denom = num_items_in_batch.to(ce.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
    return ce.sum() / denom


def per_example_ce(hidden, labels, lm_head, chunk: int = 512):
    """(per-example mean CE over labelled tokens (B,), correct next-token predictions, token count):
    the QMM loss of :func:`safekey.train.qmm.qmm_loss_per_example` without its logits."""
    hits: list = []
    ce, b, _ = token_ce(hidden, labels, lm_head, chunk, hits)
    B = labels.shape[0]
    sums = torch.zeros(B, dtype=torch.float32, device=hidden.device).index_add(0, b, ce)
    counts = torch.zeros(B, dtype=torch.float32, device=hidden.device).index_add(0, b, torch.ones_like(ce))
    correct = torch.stack(hits).sum() if hits else torch.zeros((), dtype=torch.long, device=hidden.device)
    return sums / counts.clamp(min=1), correct.detach(), torch.tensor(ce.numel(), device=hidden.device)


__all__ = ["FunctionalHead", "causal_lm_loss", "labelled_positions", "per_example_ce", "token_ce"]
