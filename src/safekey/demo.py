"""`safekey demo`: the `demo` preset through the experiment planner and step runner (one planner).

Why no planner of its own: the demo is the experiment a first-time user runs; when it is the
`demo` preset, what it shows is what `safekey run` does, and a fix to either is a fix to both. The
demo's flags are ``--set`` overrides of the preset (:func:`overrides`); the table it prints is read
from the runs' summaries (:func:`results_table`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .steps import StepRunner, fmt_duration

PRESET = "demo"
ANALYSES_LIMIT = 24


def overrides(*, model: str | None = None, epochs: int | None = None, train_limit: int | None = None,
              eval_limit: int | None = None, max_new_tokens: int | None = None, full: bool = False,
              analyses: bool = False) -> list[str]:
    """The demo's flags as ``--set`` overrides of the preset."""
    sets = []
    for key, val in (("model", model), ("train.epochs", epochs), ("train.limit", train_limit),
                     ("safety.limit", eval_limit), ("safety.max_new_tokens", max_new_tokens)):
        if val is not None:
            sets.append(f"{key}={val}")
    if full:
        sets.append("train.lora=false")
    if analyses:
        sets += ["analyses.probe=true", "analyses.attention=true", "analyses.kl=true",
                 "analyses.traces={starter}/heldout_traces.jsonl", f"analyses.limit={ANALYSES_LIMIT}"]
    return sets


def run_demo(out: str | Path, sets: list[str], *, echo: Callable[[str], None] = print, fresh: bool = False) -> dict[str, Any]:
    """Plan the preset with `sets` and run it into `out` (resuming what is there)."""
    from .experiment import load_experiment, plan_steps
    from .models import resolve_model
    from .store import write_stats

    exp, here = load_experiment(PRESET, sets)
    out = Path(out).resolve()
    if fresh and out.exists():
        shutil.rmtree(out)
    t = time.time()
    base = resolve_model(exp.model)  # converts the embedded GGUF once (~1 min), cached afterwards
    if time.time() - t > 2:
        echo(f"prepared {exp.model} in {fmt_duration(time.time() - t)} → {base}")
    steps, manifest = plan_steps(exp, here, out, base)
    out.mkdir(parents=True, exist_ok=True)
    write_stats(out / "experiment.json", manifest)
    # one float order wherever the demo runs: 2 threads per step (the README's machine) unless the
    # user chose; with the seeded data order and greedy decoding the tables are then byte-identical
    # from run to run and folder to folder (README: two runs compared). Another CPU family may round
    # differently.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "2")
    t0 = time.time()
    seconds = StepRunner(out, echo=echo, what="safekey demo").run(steps)
    return {"seconds": time.time() - t0, "report": out / "report.html", "table": results_table(out), "steps": seconds,
            "experiment": exp}


def results_table(out: Path) -> list[dict[str, Any]]:
    """One row per model: harmful rate on the two unsafe sets, over-refusal on the benign set (with CIs)."""
    rows = []
    for run in ("base", "sft", "safekey"):
        p = Path(out) / "eval" / run / "summary.json"
        if not p.exists():
            continue
        b = json.loads(p.read_text())["benchmarks"]
        rows.append({
            "model": run,
            "harmful": b.get("heldout_harmful", {}).get("metrics", {}).get("harmful_rate"),
            "jailbreak": b.get("heldout_jailbreak", {}).get("metrics", {}).get("harmful_rate"),
            "over_refusal": b.get("heldout_benign", {}).get("metrics", {}).get("refusal_rate"),
        })
    return rows


def markdown_table(rows: list[dict[str, Any]], base_name: str = "smollm2-135m") -> str:
    from .metrics import fmt_rate

    names = {"base": f"{base_name} (base)", "sft": "+ SFT (STAR-1 style)", "safekey": "+ SafeKey (SFT + DPSH + QMM)"}
    lines = ["| model | harmful compliance, plain ↓ | harmful compliance, jailbreak ↓ | over-refusal, benign ↓ |",
             "|---|---|---|---|"]
    for r in rows:
        cells = [fmt_rate(r[k]) if r[k] else "—" for k in ("harmful", "jailbreak", "over_refusal")]
        lines.append(f"| {names.get(r['model'], r['model'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
