"""The miniature SafeKey replication (issue #17), one command:

    python benchmarks/replicate_mini.py [--out runs/replicate-mini] [--quick]

base vs SFT vs SafeKey and the ablations -DPSH, -QMM and QMM-unmasked on the embedded SmolLM2, each
trained with 3 seeds on all 128 starter records, evaluated on 100 StrongREJECT prompts plain, the same
100 in 5 jailbreak wrappers never used in training, and 100 XSTest safe prompts (keyword judge: an
offline refusal-phrase proxy), plus the aha rate, the U-state probe and attention on U per model.
It is the `replicate-mini` preset of `safekey run` (resumable: rerun after an interruption) followed
by a decontamination check up front and the variants × seeds table, its plain reading and one plot.
About 80 minutes on 2 idle cores; `--quick` (2 seeds, SFT and SafeKey, 16 records, 10 prompts per
benchmark) takes a few minutes and is what the test suite could run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUICK = ["seeds=[1,2]", "variants=[{name: sft, mode: sft}, {name: safekey, mode: safekey}]", "train.limit=16",
         "safety.limit=10", "safety.max_new_tokens=32", "analyses.limit=16"]


def _grams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    w = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def decontamination(train_path: str, benches: list[str]) -> dict[str, int]:
    """Eval prompts sharing an 8-word run (or the whole text) with a training question: must be 0."""
    from safekey.evals.safety_benchmarks import get_benchmark
    from safekey.store import read_records

    train = read_records(train_path)
    grams = set().union(*(_grams(r.question or "") for r in train))
    exact = {(r.question or "").strip().lower() for r in train}
    out = {}
    for b in benches:
        recs = get_benchmark(b).load()
        out[b] = sum(1 for r in recs if (r.question or "").strip().lower() in exact or _grams(r.question or "") & grams)
    return out


def main(preset: str = "replicate-mini", quick: list[str] = QUICK, doc: str = __doc__) -> int:
    """Run `preset` (decontamination check first), then print the variants × seeds table."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", default=f"runs/{preset}")
    ap.add_argument("--quick", action="store_true", help="a few minutes: fewer seeds, variants and prompts")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override of the preset (repeatable)")
    ap.add_argument("--plot", default=None, help="also save the plot here (PNG)")
    args = ap.parse_args()
    from safekey.experiment import Paths, load_experiment
    from safekey.report import seeds
    from safekey.report.collect import collect

    overrides = (quick if args.quick else []) + args.overrides
    exp, here = load_experiment(preset, overrides)
    leaks = decontamination(Paths(here)(exp.train_data), [b for b in exp.safety.benches if b != "strongreject-jailbreak"])
    print(f"decontamination (eval prompts sharing an 8-word run with a training question): {leaks}")
    if any(leaks.values()):
        print("refusing to run: the training data overlaps the evaluation prompts", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "safekey.cli.main", "run", preset, "-o", args.out]
    for o in overrides:
        cmd += ["--set", o]
    rc = subprocess.call(cmd)
    if rc != 0:
        return rc
    out = Path(args.out)
    study = seeds.seed_study(out / "experiment.json", collect([out]).evals)  # safety and reasoning: one row per model
    if study is None:
        print("no runs to aggregate", file=sys.stderr)
        return 1
    (out / "study.json").write_text(json.dumps(study, indent=1))
    table = seeds.to_markdown(study)
    shows = seeds.what_this_shows(study)
    (out / "study.md").write_text(table + "\n\n" + "\n".join(f"- {s}" for s in shows) + "\n")
    png = seeds.save_plot(study, out / f"{preset.replace('-', '_')}.png")
    if args.plot:
        seeds.save_plot(study, args.plot)
    print()
    print(table)
    print()
    print("\n".join(f"- {s}" for s in shows))
    print(f"\nplot: {png}; report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
