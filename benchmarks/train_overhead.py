"""Time per optimizer step on the same batches of real STAR-1 records:

  (a) plain SFT (our SafeKeyTrainer, mode=sft)
  (b) our SafeKey (SFT + DPSH via a last-layer hook + QMM truncated at K's end)
  (c) the reference design (output_hidden_states=True + a full-length second pass)
  (d) TRL SFTTrainer SFT on the same token ids / loss mask

Spans come from a simple first-sentence rule (U = first sentence, K = the next one) until the annotator
lands. Usage:  python benchmarks/train_overhead.py [--model smollm2-135m|mid-random] [--steps 3]
Prints a markdown table. Timing excludes the first (warm-up) step. (a) and (b) run alternately in
`--rounds` rounds (a, b, a, b, …): this machine's speed drifts by 10–20 % over minutes, and timing
all of (a) before all of (b) put that drift into the ratio (1.11 and 1.18 on one quiet hour).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def first_sentence_spans(response: str) -> tuple[int, int]:
    body = response[len("<think>\n") : response.index("\n</think>")]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", body)]
    u = ends[0]
    k = next((e for e in ends[1:] if body[u:e].strip()), len(body))
    return 8 + u, 8 + k


def star1_with_spans(n: int):
    from safekey.paths import data_file
    from safekey.types import Record

    out = []
    for d in json.loads(data_file("star1/STAR-1.json").read_text())[:n]:
        d["u_end"], d["k_end"] = first_sentence_spans(d["response"])
        d["unsafe"] = 1
        out.append(Record.model_validate(d))
    return out


def model_dir(name: str) -> str:
    from safekey.models import make_tiny_model, models_dir, resolve_model

    if name != "mid-random":
        return resolve_model(name)
    d = models_dir() / "mid-random-bench"
    if not (d / "config.json").exists():  # 8 layers × 384 hidden, SmolLM2 tokenizer (~40M params)
        make_tiny_model(d, layers=8, hidden=384, heads=6, kv_heads=2, intermediate=1024)
    return str(d)


class StepTimer:
    def __init__(self):
        from transformers import TrainerCallback

        outer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                outer.t0, outer.c0 = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kw):
                outer.times.append(time.perf_counter() - outer.t0)
                outer.cpu.append(time.process_time() - outer.c0)

        self.times: list[float] = []
        self.cpu: list[float] = []  # CPU seconds (all threads): what the step computed, without a neighbour's steal
        self.cb = CB()


def run_ours(path, records, variant, steps, bs, ga, max_len):
    from safekey.train.config import TrainConfig
    from safekey.train.run import build_trainer

    kw = dict(model=path, epochs=1, last_k_epochs=1, effective_batch=bs * ga, per_device_batch=bs, max_length=max_len,
              save_steps=10**6, save_total_limit=1, logging_steps=10**6, lr=1e-5)
    if variant == "sft":
        kw["mode"] = "sft"
    elif variant == "reference":
        kw.update(mode="safekey", reference_impl=True)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _, _ = build_trainer(TrainConfig(**kw), records, tmp, extra_callbacks=[timer.cb])
        trainer.args.max_steps = steps + 1
        trainer.args.save_strategy = "no"
        trainer.train()
    CPU.setdefault(variant, []).extend(timer.cpu[1:])
    return timer.times[1:]


CPU: dict[str, list[float]] = {}


def run_trl(path, records, steps, bs, ga, max_len):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from safekey.train.spans import encode_record

    tok = AutoTokenizer.from_pretrained(path)
    rows = []
    for r in records:
        e = encode_record(tok, r, needs_spans=False, max_length=max_len)
        rows.append({"input_ids": e.input_ids, "completion_mask": [int(l != -100) for l in e.labels]})
    ds = Dataset.from_list(rows)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SFTConfig(output_dir=tmp, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=steps + 1,
                        learning_rate=1e-5, gradient_checkpointing=False, bf16=False, fp16=False, report_to="none",
                        save_strategy="no", logging_steps=10**6, max_length=max_len, packing=False, padding_free=False,
                        completion_only_loss=True, dataset_num_proc=None, disable_tqdm=True, seed=2002,
                        dataloader_pin_memory=False, lr_scheduler_type="cosine", optim="adamw_torch")
        model = AutoModelForCausalLM.from_pretrained(path)
        tr = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[timer.cb])
        tr.train()
    return timer.times[1:]


def qmm_token_share(path, records, max_len):
    """Tokens the QMM pass runs over (drop: <think> + U + K) as a share of the full sequences."""
    from transformers import AutoTokenizer

    from safekey.train.spans import ASSISTANT, K, U, encode_record

    tok = AutoTokenizer.from_pretrained(path)
    seen = total = 0
    for r in records:
        e = encode_record(tok, r, needs_spans=True, max_length=max_len)
        k_end = e.k_span[1]
        seen += sum(1 for role in e.roles[:k_end] if role in (ASSISTANT, U, K))
        total += len(e.input_ids)
    return seen / total, seen / len(records)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mid-random", help="smollm2-135m, mid-random, or a model folder")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after 1 warm-up)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="alternating (a), (b) rounds (the ratio pools them)")
    a = ap.parse_args(argv)
    import torch

    torch.manual_seed(0)
    path = model_dir(a.model)
    records = star1_with_spans(a.batch * a.grad_accum * (a.steps + 1))
    res = {}
    pooled: dict[str, list[float]] = {"(a) SFT (ours)": [], "(b) SafeKey (ours)": []}
    rounds = []
    for r in range(a.rounds):  # (a) and (b) alternate: the machine's drift lands on both
        ta = run_ours(path, records, "sft", a.steps, a.batch, a.grad_accum, a.max_length)
        tb = run_ours(path, records, "safekey", a.steps, a.batch, a.grad_accum, a.max_length)
        pooled["(a) SFT (ours)"] += ta
        pooled["(b) SafeKey (ours)"] += tb
        rounds.append(statistics.median(tb) / statistics.median(ta))
        print(f"round {r + 1}: sft {[round(x, 2) for x in ta]} safekey {[round(x, 2) for x in tb]}", file=sys.stderr)
    res = {k: statistics.median(v) for k, v in pooled.items()}
    for name, fn in [
        ("(c) SafeKey, reference design", lambda: run_ours(path, records, "reference", a.steps, a.batch, a.grad_accum, a.max_length)),
        ("(d) TRL SFTTrainer SFT", lambda: run_trl(path, records, a.steps, a.batch, a.grad_accum, a.max_length)),
    ]:
        t = fn()
        res[name] = statistics.median(t)
        print(f"{name}: {[round(x, 2) for x in t]}", file=sys.stderr)
    A, B, C, D = res.values()
    share, per_rec = qmm_token_share(path, records, a.max_length)
    print(f"\nmodel: {a.model} ({path}); {a.steps} timed steps ({a.rounds} alternating rounds for (a), (b)) × "
          f"{a.batch}×{a.grad_accum} STAR-1 records, "
          f"max length {a.max_length}, torch threads {torch.get_num_threads()}\n")
    print("| run | s / optimizer step (median) |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.2f} |")
    print(f"\nQMM pass (drop: <think> + U + K): {per_rec:.0f} tokens per record = {share:.0%} of the sequence tokens")
    spread = ", ".join(f"{x:.2f}" for x in rounds)
    print(f"\n| ratio | value | target |\n|---|---|---|\n| (b)/(a) SafeKey overhead, pooled over {a.rounds} rounds "
          f"(per round: {spread}) | {B / A:.2f} | ≤ 1.10 |")
    cpu = statistics.median(CPU["safekey"]) / statistics.median(CPU["sft"])
    print(f"| (b)/(a) in CPU seconds (a neighbour's load does not count) | {cpu:.2f} | ≤ 1.10 |")
    print(f"| (a)/(d) ours vs TRL | {A / D:.2f} | ≤ 1.0 |\n| (c)/(b) reference vs ours | {C / B:.2f} | reported |")


if __name__ == "__main__":
    main()
