"""`SafeKeyTrainer`: transformers `Trainer` with the SafeKey losses added in `compute_loss`.

Loss of one optimizer step (accumulated batch of N examples and M assistant tokens, over all ranks):
    total = Σ CE(assistant tokens)/M  +  0.2·Σ_i head_i/N  +  0.2·Σ_i qmm_i/N
The LM term is transformers' own causal-LM loss with ``num_items_in_batch`` (so gradient accumulation and
multi-GPU give exactly the full-batch value); the extra losses are per-example means. The extra losses
exist only in the last ``last_k_epochs`` epochs. Components are logged separately (no in-place add onto
the total, the reference's `full_loss == total` bug) and gathered across ranks before logging.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from ..types import SafekeyError
from .config import TrainConfig
from .heads import HEADS_ATTR, HEADS_FILE, head_loss_per_example, span_masks
from .launch import enable_fsdp_on_cpu
from .lean_loss import FunctionalHead, causal_lm_loss, per_example_ce
from .qmm import build_qmm_inputs, pack_segments, qmm_loss_per_example, sliding_window_layers

log = logging.getLogger(__name__)
LOG_KEYS = ("lm_loss", "qmm_loss", "head_loss", "head_acc_u", "head_acc_pre_k", "qmm_k_acc")
# TRL's DPOTrainer logs (dpo mode): the implicit rewards and the policy's log-probs of each side
DPO_LOG_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected")
SPAN_KEYS = ("roles", "u_start", "u_end", "k_start", "k_end", "unsafe")


def _head_of(x, T: int):
    """The main rows' first T positions (a packed forward appends the QMM segment after them)."""
    if x is None or x.shape[1] == T:
        return x
    return x[:, :T].contiguous()


def unwrap_peft(m):
    return m.get_base_model() if hasattr(m, "get_base_model") else m


class TrainLogWriter(TrainerCallback):
    """One JSON line per logging step in OUT_DIR/train_log.jsonl (names read by report/demo code)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "loss": logs["loss"]}
        row.update({k: logs.get(k) for k in LOG_KEYS})
        row.update({k: logs[k] for k in DPO_LOG_KEYS if k in logs})
        # TRL's GRPOTrainer logs (grpo mode): the mean reward, each reward's mean, completion lengths
        row.update({k: v for k, v in logs.items() if k in ("reward", "reward_std", "completions/mean_length",
                                                            "frac_reward_zero_std", "dynamic_sampling/dropped_share")
                    or (k.startswith("rewards/") and k.endswith("/mean")) or k.startswith("safety/")})
        row["lr"] = logs.get("learning_rate")
        row["grad_norm"] = logs.get("grad_norm")
        row["extras_active"] = logs.get("extras_active")
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class TrainProgress(TrainerCallback):
    """A progress bar like the evals': steps, loss, tokens/s and an ETA (rank 0 only)."""

    def __init__(self):
        self.bar = None
        self.tokens = 0
        self.t0 = 0.0

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        import time

        from tqdm.auto import tqdm

        self.t0 = time.time()
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.bar is None or not logs or "loss" not in logs:
            return
        import time

        self.tokens = int(state.num_input_tokens_seen or 0) or self.tokens
        rate = f", {self.tokens / max(time.time() - self.t0, 1e-9):.0f} tok/s" if self.tokens else ""
        self.bar.set_postfix_str(f"loss {logs['loss']:.4f}{rate}")

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def loss_scales(world: int, average_tokens_across_devices: bool) -> tuple[int, int]:
    """(LM scale, head/QMM scale) that undo the gradient averaging of DDP / FSDP / ZeRO over `world` ranks.

    LM: transformers' semantics — ``num_items_in_batch`` is summed over ranks only when
    `average_tokens_across_devices`, so only then is the per-rank loss multiplied back. Head/QMM:
    their denominator is ALWAYS the global example count (gathered in ``get_batch_samples``), so
    they are ALWAYS multiplied by the world size; tying them to the flag made them W times too small.
    """
    return (world if (world > 1 and average_tokens_across_devices) else 1), world


class HiddenCapture:
    """The decoder's last hidden state of a forward, from one hook on the decoder (not
    output_hidden_states=True, which keeps every layer's)."""

    def __init__(self):
        self.hook = None
        self.on = False
        self.value = None

    def forward(self, model, decoder, inputs, lean: bool):
        """(outputs, last hidden state); `lean`: lm_head sees only the last position."""
        if self.hook is None:
            def hook(mod, inp, out):
                if self.on:
                    self.value = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

            self.hook = decoder.register_forward_hook(hook)
        self.on = True
        try:
            out = model(**inputs, **({"logits_to_keep": 1} if lean else {}))
        finally:
            self.on = False
        hidden, self.value = self.value, None
        return out, hidden


class LossMeter:
    """Sums of the loss terms and accuracy counts between two logging steps (tensors, so no sync
    per micro-batch); `read` reduces them over ranks and resets."""

    def __init__(self, device):
        self.device = device
        self.reset(0)

    def reset(self, step: int) -> None:
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        self.from_step = step
        self.active = False
        self.fresh = True

    def add(self, step: int, **values) -> None:
        if self.fresh:  # the first micro-batch since the last log
            self.from_step, self.fresh = step, False
        for k, v in values.items():
            self.sums[k] += v.detach() if torch.is_tensor(v) else v

    def read(self, step: int, gather=None) -> dict[str, float | None]:
        a, steps = self.sums, max(1, step - self.from_step)
        means = torch.stack([a["lm"], a["head"], a["qmm"]]).to(self.device).float()
        counts = torch.stack([a[k] for k in ("head_ok_u", "head_ok_pre", "head_n", "qmm_ok", "qmm_n")]).to(self.device).float()
        if gather is not None:  # reduce across ranks (the reference logged rank 0's head loss)
            means = gather(means.unsqueeze(0)).mean(0)
            counts = gather(counts.unsqueeze(0)).sum(0)
        lm, head, qmm = (means / steps).tolist()
        ok_u, ok_p, hn, qok, qn = counts.tolist()
        out = {"lm_loss": lm, "head_loss": head, "qmm_loss": qmm, "head_acc_u": ok_u / hn if hn else None,
               "head_acc_pre_k": ok_p / hn if hn else None, "qmm_k_acc": qok / qn if qn else None,
               "extras_active": self.active}
        self.reset(step)
        return out


class SafeKeyTrainer(Trainer):
    loss_is_scaled_for_ga = True  # every term is normalised over the whole accumulated batch

    def __init__(self, *args, skcfg: TrainConfig, **kw):
        super().__init__(*args, **kw)
        self.skcfg = skcfg
        # we call transformers' loss function ourselves with num_items_in_batch; this makes Trainer count it
        self.model_accepts_loss_kwargs = True
        self._n_examples = None
        self.meter = LossMeter(self.args.device)
        self.capture = HiddenCapture()
        self.exporting = False

    # -- helpers ---------------------------------------------------------------------------------
    def _core(self):
        return self.accelerator.unwrap_model(self.model)

    def heads(self):
        return getattr(self._core(), HEADS_ATTR, None)

    def extras_active(self) -> bool:
        c = self.skcfg
        if not (c.use_head or c.use_qmm):
            return False
        epochs = int(self.args.num_train_epochs)
        per_epoch = max(1, math.ceil(self.state.max_steps / epochs))
        return self.state.global_step // per_epoch >= epochs - c.last_k_epochs

    def _forward_capturing(self, model, inputs, lean: bool):
        return self.capture.forward(model, unwrap_peft(self._core()).get_decoder(), inputs, lean)

    def _lm_head(self):
        head = unwrap_peft(self._core()).get_output_embeddings()
        # under FSDP a module call per chunk would reshard the output layer mid-backward (lean_loss)
        return FunctionalHead(head) if self.is_fsdp_enabled else head

    def attn_backend(self) -> str:
        return getattr(unwrap_peft(self._core()).config, "_attn_implementation", "sdpa") or "sdpa"

    def _qmm_impl(self) -> str:
        """``packed`` (auto, where a block mask is exact), else ``drop``; ``mask`` / ``packed`` only
        where the backend reads a 4D mask as a mask (eager, sdpa) and every layer attends in full."""
        c = self.skcfg
        attn = self.attn_backend()
        if c.qmm_attention == "drop" or c.reference_impl:
            return "drop"
        why = None
        if attn not in ("eager", "sdpa"):
            why = f"eager or sdpa attention, not {attn!r}: that backend does not read a 4D mask as a mask"
        elif sliding_window_layers(unwrap_peft(self._core()).config):
            why = "a model whose every layer attends in full: a 4D mask would override its sliding windows"
        if why is None:
            return "packed" if c.qmm_attention in ("auto", "packed") else ("mask_float" if attn == "eager" else "mask_bool")
        if c.qmm_attention == "auto":
            return "drop"
        raise SafekeyError(f"qmm_attention={c.qmm_attention} needs {why} (use qmm_attention=drop, exact for every backend)")

    # -- batching: count the examples of the accumulated batch across ranks ----------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, n_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        n = torch.tensor(sum(b["input_ids"].shape[0] for b in batches), device=device)
        if self.args.world_size > 1:
            n = self.accelerator.gather(n).sum()
        self._n_examples = n
        return batches, n_items

    # -- the loss: LM + head_weight · head + qmm_weight · QMM ------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        c = self.skcfg
        spans = {k: inputs.pop(k) for k in SPAN_KEYS if k in inputs}
        labels = inputs.pop("labels")
        training = model.training
        active = training and self.extras_active()
        # the heads run on every training step, with weight 0 while inactive: DDP needs every
        # parameter in the graph, under ZeRO-3 / FSDP2 a parameter may only be touched through its
        # module's forward (partitioned weights are empty outside it), and one process must train
        # exactly like N (the optimizer's step count and weight decay see the heads from step 1)
        want_hidden = c.use_head and training
        multi = self.args.world_size > 1
        lm_scale, scale = loss_scales(self.accelerator.num_processes if multi else 1, self.args.average_tokens_across_devices)
        n_ex = self._n_examples if (training and self._n_examples is not None) else labels.shape[0]
        with_qmm = active and c.use_qmm
        impl = self._qmm_impl() if with_qmm else None
        qin = qlabels = None
        fwd_inputs, T = inputs, labels.shape[1]
        if impl is not None:
            core = unwrap_peft(self._core())
            qin = build_qmm_inputs({**inputs, **spans}, hide=c.qmm_hide, unmasked=c.qmm_unmasked,
                                   impl="drop" if impl == "packed" else impl, truncate=not c.reference_impl, dtype=core.dtype)
            qlabels = qin.pop("labels")
            if impl == "packed":  # one forward: [main | QMM segment] behind a block mask
                fwd_inputs = pack_segments(inputs, qin, boolean=self.attn_backend() == "sdpa", dtype=core.dtype)
        out, logits, hidden = self._forward(model, fwd_inputs, want_hidden or c.lean_loss)
        lm = self._lm_term(_head_of(logits, T), _head_of(hidden, T), labels, num_items_in_batch, training) * lm_scale
        self.meter.add(self.state.global_step, lm=lm)
        self.meter.active = active
        total = lm
        if want_hidden:
            total = total + (c.head_weight if active else 0.0) * self._head_term(_head_of(hidden, T), spans, inputs["attention_mask"],
                                                                                n_ex, scale, active)
        if impl is not None:
            if impl == "packed":
                seg = (logits[:, T:] if logits is not None else None, hidden[:, T:] if hidden is not None else None)
            else:
                seg = self._forward(model, qin, c.lean_loss)[1:]
            total = total + c.qmm_weight * self._qmm_term(*seg, qlabels, n_ex, scale)
        return (total, out) if return_outputs else total

    def _forward(self, model, inputs, need_hidden: bool):
        """(outputs, full logits or None under the lean loss, last hidden state or None)."""
        c = self.skcfg
        if need_hidden and c.reference_impl:
            out = model(**inputs, output_hidden_states=True)
            return out, out.logits, out.hidden_states[-1]
        if need_hidden:
            out, hidden = self._forward_capturing(model, inputs, c.lean_loss)
            return out, (None if c.lean_loss else out.logits), hidden
        out = model(**inputs)
        return out, out.logits, None

    def _lm_term(self, logits, hidden, labels, num_items_in_batch, training: bool):
        """Next-token cross-entropy over the labelled (response) tokens, transformers' normalisation."""
        c = self.skcfg
        if c.lean_loss:
            lm = causal_lm_loss(hidden, labels, self._lm_head(), num_items_in_batch, c.loss_chunk)
        else:
            core = unwrap_peft(self._core())
            vocab = core.config.get_text_config().vocab_size
            lm = core.loss_function(logits=logits, labels=labels, vocab_size=vocab, num_items_in_batch=num_items_in_batch)
        if num_items_in_batch is None and training:  # per-micro-batch mean: scale for accumulation
            lm = lm / self.current_gradient_accumulation_steps
        return lm

    def _head_term(self, hidden, spans, attention_mask, n_ex, scale: int, active: bool):
        """Dual-Path Safety Head: harmful-vs-benign from U (and from everything before K), per example,
        over the global batch (`scale` undoes the ranks' gradient averaging; see loss_scales)."""
        u_mask, pre_mask = span_masks(hidden.shape[1], spans["u_start"], spans["u_end"], spans["k_start"], hidden.device)
        lu, lp = self.heads()(hidden, u_mask, pre_mask & attention_mask.bool())
        y = spans["unsafe"]
        head = head_loss_per_example(lu, lp, y, self.skcfg.theta).sum() / n_ex * scale
        if active:
            self.meter.add(self.state.global_step, head=head, head_ok_u=((lu > 0).long() == y).sum(),
                           head_ok_pre=((lp > 0).long() == y).sum(), head_n=y.numel())
        return head

    def _qmm_term(self, logits, hidden, qlabels, n_ex, scale: int):
        """Query-Mask Modeling: K's tokens predicted with the query hidden, per example, over the global
        batch, from the QMM pass's (or the packed segment's) hidden states or logits."""
        c = self.skcfg
        if c.lean_loss:
            per_ex, correct, count = per_example_ce(hidden, qlabels, self._lm_head(), c.loss_chunk)
        else:
            per_ex, correct, count = qmm_loss_per_example(logits, qlabels)
        qmm = per_ex.sum() / n_ex * scale
        self.meter.add(self.state.global_step, qmm=qmm, qmm_ok=correct, qmm_n=count)
        return qmm

    # -- logging ----------------------------------------------------------------------------------
    def log(self, logs, start_time=None):
        if "loss" in logs and self.model.training:
            got = self.meter.read(self.state.global_step, self.accelerator.gather if self.args.world_size > 1 else None)
            if not self.skcfg.use_head:
                got["head_loss"] = 0.0
            if not self.skcfg.use_qmm:
                got["qmm_loss"] = 0.0
            logs.update(got)
        super().log(logs, start_time)

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        enable_fsdp_on_cpu(self)

    # -- saving: heads never go into model weights ------------------------------------------------
    def _save(self, output_dir=None, state_dict=None):
        output_dir = Path(output_dir or self.args.output_dir)
        if state_dict is None:
            state_dict = self.model.state_dict()
        pre = HEADS_ATTR + "."
        heads = {k[len(pre) :]: v.detach().cpu().contiguous() for k, v in state_dict.items() if k.startswith(pre)}
        rest = {k: v for k, v in state_dict.items() if not k.startswith(pre)}
        super()._save(str(output_dir), state_dict=rest)
        if heads and not self.exporting and self.args.should_save:
            from safetensors.torch import save_file

            save_file(heads, str(output_dir / HEADS_FILE))

    def _issue_warnings_after_load(self, load_result):
        """The heads are saved apart (HEADS_FILE) and restored right after the model's weights: their
        keys missing from model.safetensors are expected, not a warning (it said the opposite)."""
        from types import SimpleNamespace

        missing = [k for k in load_result.missing_keys if k.split(".", 1)[0] != HEADS_ATTR and f".{HEADS_ATTR}." not in k]
        return super()._issue_warnings_after_load(SimpleNamespace(missing_keys=missing,
                                                                  unexpected_keys=list(load_result.unexpected_keys)))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        heads = self.heads()
        if heads is None or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            # FSDP / DeepSpeed checkpoints hold the whole module, heads included (and the heads'
            # parameters are DTensors / partitions there: a plain load_state_dict would fail)
            return
        p = Path(resume_from_checkpoint) / HEADS_FILE
        if not p.exists():
            raise SafekeyError(f"{resume_from_checkpoint}: no {HEADS_FILE}; cannot resume the safety heads")
        from safetensors.torch import load_file

        heads.load_state_dict(load_file(str(p)))
        log.info("resume: restored the safety heads from %s", p)
