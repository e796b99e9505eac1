"""The 2026 baseline table in miniature (issue #29), one command:

    python benchmarks/baselines_mini.py [--out runs/baselines-mini] [--quick]

base, SFT, SafeKey, intervened DPO and SFT → GRPO (± RECAP prefills) on the embedded SmolLM2, 3 seeds,
the same starter prompts for every method, evaluated on StrongREJECT plain / under a prefilled
thought / under PAIR (small budget) / in jailbreak wrappers, XSTest (over-refusal) and a MATH-500
slice, harmful reasoning judged beside harmful answers. It is the `baselines-mini` preset of
`safekey run` (resumable) with the decontamination check up front and the variants × seeds table
after (the same machinery as benchmarks/replicate_mini.py), then what each method cost: training
examples, optimizer steps, tokens read in training, tokens generated in training and wall time.
`--quick`: 1 seed, 8 records, 10 prompts per benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replicate_mini import main

QUICK = ["seeds=[1]", "train.limit=8", "safety.limit='strongreject=10,strongreject-jailbreak=10,xstest=10,strongreject@pair=4'",
         "safety.max_new_tokens=32", "reasoning.limit=3", "reasoning.max_new_tokens=64", "pairs.limit=8"]


def _jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()] if p.exists() else []


def train_cost(folder: Path, tok, data: str) -> dict:
    """What one training run read and generated, from its config, stats, log and data (tokens are
    the examples' tokens after the chat template and truncation; GRPO's prompt tokens ≈ mean × n)."""
    import yaml

    from safekey.store import read_records
    from safekey.train.config import TrainConfig
    from safekey.train.data import encode_all

    cfg = TrainConfig.model_validate(yaml.safe_load((folder / "train_config.yaml").read_text()))
    stats = json.loads((folder / "train_stats.json").read_text())
    log = _jsonl(folder / "train_log.jsonl")
    out = {"mode": cfg.mode, "examples": stats["examples"], "steps": stats["global_step"], "generated": 0}
    recs = list(read_records(data, limit=cfg.limit))
    if cfg.mode in ("sft", "safekey"):
        feats, _ = encode_all(tok, recs, cfg)
        out["tokens"] = sum(len(f["input_ids"]) for f in feats) * cfg.epochs
    elif cfg.mode == "dpo":
        n = 0
        for r in (x for x in _jsonl(Path(data)) if x.get("status") == "pair"):
            p = tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False, add_generation_prompt=True)
            n += sum(min(len(tok(p + r[k], add_special_tokens=False)["input_ids"]), cfg.max_length) for k in ("chosen", "rejected"))
        out["tokens"] = n * cfg.epochs
    else:  # grpo: every step generates num_generations completions of one prompt group
        per_step = cfg.per_device_batch
        gen = sum(float(e.get("completions/mean_length") or 0) * per_step for e in log)
        prompt = mean(len(tok(tok.apply_chat_template([{"role": "user", "content": r.question}], tokenize=False,
                                                      add_generation_prompt=True), add_special_tokens=False)["input_ids"])
                      for r in recs[:64])
        out["generated"] = round(gen)
        out["tokens"] = round(gen + prompt * per_step * out["steps"])
    return out


def costs(out: Path) -> str:
    """Markdown: per variant (mean over seeds) what training cost; GRPO's rows add the SFT it starts from."""
    from transformers import AutoTokenizer

    exp = json.loads((out / "experiment.json").read_text())
    steps = json.loads((out / "steps.json").read_text())
    tok = AutoTokenizer.from_pretrained(exp["models"]["base"])
    rows = ["| variant | examples | optimizer steps | tokens read in training | tokens generated in training | "
            "train wall time (s) |", "|---|---|---|---|---|---|"]
    for variant, members in exp["groups"].items():
        if variant == "base":
            continue
        cs, secs = [], []
        for m in members:
            cmd = steps[f"train-{m}"]["cmd"]
            cs.append(train_cost(Path(exp["models"][m]), tok, cmd[cmd.index("run") + 1]))
            secs.append(steps[f"train-{m}"].get("seconds") or 0.0)
        extra = ""
        if cs[0]["mode"] == "dpo" and "pairs" in steps:
            extra = f" + pairs {steps['pairs'].get('seconds', 0):.0f} s once"
        if cs[0]["mode"] == "grpo":
            extra = " + its SFT"
        rows.append(f"| {variant} | {mean(c['examples'] for c in cs):.0f} | {mean(c['steps'] for c in cs):.0f} | "
                    f"{mean(c['tokens'] for c in cs):,.0f} | {mean(c['generated'] for c in cs):,.0f} | "
                    f"{mean(secs):.0f}{extra} |")
    return "\n".join(rows)


def brief(study: dict) -> str:
    """The README's table: per variant and column the mean ± sd over seeds and the paired Δ vs the
    baseline with its two-level bootstrap interval; * where that interval excludes 0 (n ≥ 10)."""
    from safekey.metrics import MIN_CLAIM_N
    from safekey.report.seeds import cell_of, column_label

    cols = study["benches"]
    out = ["| variant | " + " | ".join(column_label(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in study["rows"]:
        cells = []
        for c in cols:
            cell = cell_of(r, c)
            sd = (cell.get("seeds") or {}).get("sd")
            mean_ = (cell.get("seeds") or {}).get("mean")
            txt = "—" if mean_ is None else f"{100 * mean_:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")
            d = cell.get("delta_vs_baseline")
            if d:
                star = "*" if d.get("n", 0) >= MIN_CLAIM_N and (d["ci"][0] > 0 or d["ci"][1] < 0) else ""
                txt += f" (Δ {100 * d['delta']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]{star})"
            cells.append(txt)
        out.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    rc = main("baselines-mini", QUICK, __doc__)
    if rc == 0:
        ap = argparse.ArgumentParser()
        ap.add_argument("--out", default="runs/baselines-mini")
        out = Path(ap.parse_known_args()[0].out)
        table = costs(out)
        (out / "costs.md").write_text(table + "\n")
        short = brief(json.loads((out / "study.json").read_text()))
        (out / "brief.md").write_text(short + "\n")
        print("\nmean ± sd over seeds (Δ vs the baseline [95 % interval], * = excludes 0):\n" + short)
        print("\nwhat each method cost (mean over seeds; 2 CPU cores):\n" + table)
    sys.exit(rc)
