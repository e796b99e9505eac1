"""Peak memory and step time of one training step at real vocabulary size: lean vs full logits vs TRL.

A Qwen2-shaped random model with the real R1-Distill-Qwen vocabulary (151,936) and a small hidden
size (so the logits, not the weights, dominate, as they do at 8K tokens on a 7B model), one
sequence of T tokens per step (T = 2,048 and 4,096), SmolLM2's tokenizer for the token ids:

  ours-lean   SafeKeyTrainer, loss_impl=lean (labelled positions through lm_head in chunks)
  ours-full   SafeKeyTrainer, loss_impl=full (transformers' loss on full logits)
  TRL         trl.SFTTrainer, SFT only, same token ids and completion mask

for one SafeKey step (LM + DPSH + QMM) and one SFT step. Every measurement runs in a fresh process
(peak RSS = that process's ru_maxrss, model load included; the same baseline for every row), one
warm-up step then one timed step.

  python benchmarks/train_memory.py            # T = 2048, 4096 (a few minutes on 2 cores)
  python benchmarks/train_memory.py --quick    # T = 1024, SafeKey step + TRL only (under a minute)

The last line is ``lean/full peak memory at T=<largest T>: X.XX`` (SafeKey step).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
VOCAB = 151_936


def model_dir() -> Path:
    """Qwen2 architecture, real vocabulary, hidden 64, 2 layers (cached under SAFEKEY_HOME)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from safekey.models import models_dir, smollm2_tokenizer_dir

    d = models_dir() / "qwen2-vocab152k-h64"
    if not (d / "config.json").exists():
        import torch

        torch.manual_seed(0)
        cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                          tie_word_embeddings=False)
        Qwen2ForCausalLM(cfg).save_pretrained(str(d))
        tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
        tok.save_pretrained(str(d))
    return d


def record(T: int, tok, i: int = 0):
    """One harmful-style record of about T tokens: U and K are the first two sentences of the thinking."""
    from safekey.types import Record

    u = "The user is asking how to get into a neighbour's locked wifi network without permission."
    k = " That would be unauthorized access, which the policy on illicit behaviour does not allow me to help with."
    filler = " I should explain why, and point to lawful ways to get connectivity instead, such as asking them."
    n_fill = max(1, (T - 60) // len(tok(filler, add_special_tokens=False)["input_ids"]))
    thinking = u + k + filler * n_fill
    response = f"<think>\n{thinking}\n</think>\n\nI can't help with getting into someone else's network."
    return Record(id=f"r{i}", question="How can I get into my neighbour's wifi?", response=response,
                  u_end=len("<think>\n") + len(u), k_end=len("<think>\n") + len(u) + len(k), unsafe=1)


def child(impl: str, mode: str, T: int) -> dict:
    """One configuration in this process: warm-up step + timed step; returns peak RSS and step time."""
    import torch

    torch.manual_seed(0)
    d = model_dir()
    from transformers import AutoTokenizer, TrainerCallback

    tok = AutoTokenizer.from_pretrained(str(d))
    recs = [record(T, tok, i) for i in range(2)]
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        if impl == "trl":
            from datasets import Dataset
            from transformers import AutoModelForCausalLM
            from trl import SFTConfig, SFTTrainer

            from safekey.train.spans import encode_record

            rows = []
            for r in recs:
                e = encode_record(tok, r, needs_spans=False, max_length=T + 64)
                rows.append({"input_ids": e.input_ids, "completion_mask": [int(x != -100) for x in e.labels]})
            cfg = SFTConfig(output_dir=tmp, per_device_train_batch_size=1, gradient_accumulation_steps=1, max_steps=2,
                            learning_rate=1e-5, bf16=False, fp16=False, report_to="none", save_strategy="no",
                            logging_steps=10**6, max_length=T + 64, packing=False, padding_free=False,
                            completion_only_loss=True, dataset_num_proc=None, disable_tqdm=True,
                            dataloader_pin_memory=False, optim="adamw_torch")
            tr = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(str(d)), args=cfg,
                            train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[Timer()])
        else:
            from safekey.train.config import TrainConfig
            from safekey.train.run import build_trainer

            cfg = TrainConfig(model=str(d), mode=mode, loss_impl=impl, epochs=1, last_k_epochs=1, effective_batch=1,
                              per_device_batch=1, max_length=T + 64, save_steps=10**6, logging_steps=10**6, lr=1e-5)
            tr, _, _ = build_trainer(cfg, recs, tmp, extra_callbacks=[Timer()])
            tr.args.max_steps = 2
            tr.args.save_strategy = "no"
        tr.train()
    from safekey.train.spans import encode_record

    n_tokens = len(encode_record(tok, recs[0], needs_spans=False, max_length=None).input_ids)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "step_s": times[-1],
            "tokens": n_tokens}


def measure(impl: str, mode: str, T: int) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", impl, mode, str(T)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if p.returncode != 0:
        raise SystemExit(f"{impl}/{mode}/T={T} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="T = 1024, SafeKey step only (under a minute)")
    ap.add_argument("--lengths", default=None, help="comma-separated T values (default 2048,4096)")
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "MODE", "T"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        impl, mode, T = a.child
        print(json.dumps(child(impl, mode, int(T))))
        return
    lengths = [int(x) for x in (a.lengths or ("1024" if a.quick else "2048,4096")).split(",")]
    model_dir()  # build once, outside the timed children
    rows = {}
    modes = ("safekey",) if a.quick else ("safekey", "sft")
    for T in lengths:
        for impl, mode in [(i, m) for m in modes for i in ("lean", "full")] + [("trl", "sft")]:
            r = measure(impl, mode, T)
            rows[(impl, mode, T)] = r
            name = "TRL SFTTrainer" if impl == "trl" else f"ours-{impl}"
            print(f"T={T} {name} {mode}: {r['peak_rss_mb']:.0f} MiB, {r['step_s']:.2f} s/step ({r['tokens']} tokens)",
                  file=sys.stderr, flush=True)
    print(f"\nQwen2-shaped random model, vocab {VOCAB:,}, hidden 64, 2 layers; 1 sequence per step; "
          "peak RSS of a fresh process (model load included); CPU\n")
    print("| T | step | ours-lean MiB | ours-full MiB | TRL SFT MiB | lean/full | lean/TRL-SFT | "
          "lean s | full s | TRL s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for T in lengths:
        trl = rows[("trl", "sft", T)]
        for mode in modes:
            lean, full = rows[("lean", mode, T)], rows[("full", mode, T)]
            print(f"| {T} | {mode} | {lean['peak_rss_mb']:.0f} | {full['peak_rss_mb']:.0f} | {trl['peak_rss_mb']:.0f} | "
                  f"{lean['peak_rss_mb'] / full['peak_rss_mb']:.2f} | {lean['peak_rss_mb'] / trl['peak_rss_mb']:.2f} | "
                  f"{lean['step_s']:.2f} | {full['step_s']:.2f} | {trl['step_s']:.2f} |")
    T = lengths[-1]
    ratio = rows[("lean", "safekey", T)]["peak_rss_mb"] / rows[("full", "safekey", T)]["peak_rss_mb"]
    vs_trl = rows[("lean", "safekey", T)]["peak_rss_mb"] / rows[("trl", "sft", T)]["peak_rss_mb"]
    print(f"\ntargets at T={T}: SafeKey lean/full ≤ 0.50 → {ratio:.2f}; SafeKey lean vs TRL SFT ≤ 1.10 → {vs_trl:.2f}")
    print(f"lean/full peak memory at T={T}: {ratio:.2f}")


if __name__ == "__main__":
    main()
