"""The offline end-to-end demo: base SmolLM2 → SFT (STAR-1) and SafeKey on the starter data →
held-out safety eval with the offline keyword judge → analyses → one HTML report.

Why it orchestrates through the CLI (subprocesses): that is exactly what a user would type, each
stage keeps its own resume logic, and no stage is imported here. A step is skipped on rerun when
its command is unchanged and its outputs exist (``OUT/steps.json``), so an interrupted demo
continues where it stopped.

Sizes were chosen by measurement on 2 CPU cores (see :class:`Plan`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import resource
from .steps import Step, StepRunner, cli, count_lines, fmt_duration
from .types import SafekeyError

STARTER = ("train.jsonl", "heldout_harmful.jsonl", "heldout_jailbreak.jsonl", "heldout_benign.jsonl", "heldout_traces.jsonl")
BENCHES = ("heldout_harmful", "heldout_jailbreak", "heldout_benign")


@dataclass
class Plan:
    """Every knob of the demo. Defaults were measured to fit ~15 minutes on 2 idle CPU cores: one
    full SmolLM2 forward+backward costs ~11 CPU-s per 190-token example there and greedy decoding
    ~60 ms CPU per token, so training uses LoRA on the top layers only (backward stops there) and
    the traces and eval sets are short."""

    model: str = "smollm2-135m"
    train_limit: int | None = 64  # first 64 of the 128 starter records (interleaved: 32 harmful, 32 benign)
    epochs: int = 1
    last_k_epochs: int = 1  # SafeKey's extra losses in the last epoch (paper: last 2 of 5)
    lr: float = 3e-3
    batch: int = 2
    lora_alpha: int = 64  # scale alpha/r = 4: few steps must move the model (1e-3 at scale 2 barely did)
    max_length: int = 256
    lora: bool = True
    lora_top_layers: int = 8  # LoRA only in the top N transformer layers; 0 = all layers
    eval_limit: int | None = None  # per held-out file; None = all 24 of each (72 prompts)
    max_new_tokens: int = 96  # the starter thinking is 60-90 tokens: room to reach the answer's first words
    eval_batch: int = 24
    repetition_penalty: float = 1.1
    analyses: bool = False
    analysis_limit: int = 24

    def train_args(self, n_layers: int | None = None) -> list[str]:
        a = ["--epochs", str(self.epochs), "--max-length", str(self.max_length),
             "--set", f"lr={self.lr}", "--set", f"effective_batch={self.batch}", "--set", f"per_device_batch={self.batch}",
             "--set", f"last_k_epochs={self.last_k_epochs}", "--set", "warmup_ratio=0.1", "--set", "save_total_limit=1"]
        if self.lora:
            a += ["--lora", "--set", f"lora_alpha={self.lora_alpha}"]
            if self.lora_top_layers and n_layers:
                top = "|".join(str(i) for i in range(max(0, n_layers - self.lora_top_layers), n_layers))
                a += ["--set", f"lora_target_modules=.*\\.layers\\.({top})\\.(self_attn|mlp)\\.[a-z_]+_proj"]
        if self.train_limit:
            a += ["--limit", str(self.train_limit)]
        return a


class Demo:
    def __init__(self, out: Path, plan: Plan, *, echo: Callable[[str], None] = print, fresh: bool = False):
        self.out = Path(out)
        self.plan = plan
        self.echo = echo
        if fresh and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.data = self.out / "data"

    # -- the steps ---------------------------------------------------------------------------
    def cli(self, *args: str) -> list[str]:
        return cli(*args)

    def steps(self, base_model: str) -> list[Step]:
        p, d, o = self.plan, self.data, self.out
        n_train = min(p.train_limit or 128, 128)
        n_eval_each = min(p.eval_limit or 24, 24)
        n_eval = 3 * n_eval_each
        steps_per_epoch = -(-n_train // p.batch)
        # estimates (seconds, 2 idle cores) from measured per-example costs; refined while running
        gen_s = n_eval * p.max_new_tokens * 0.025 + 20
        train_s = n_train * p.epochs * (3.0 if p.lora else 6.0) + 25
        extra_s = n_train * p.last_k_epochs * 1.0
        bench_args = [a for b in BENCHES for a in ("--bench-file", str(d / f"{b}.jsonl"))]
        eval_args = ["--judge", "keyword", "--max-new-tokens", str(p.max_new_tokens), "--batch-size", str(p.eval_batch),
                     "--repetition-penalty", str(p.repetition_penalty), "--no-progress"]
        if p.eval_limit:
            eval_args += ["--limit", str(p.eval_limit)]
        n_layers = json.loads((Path(base_model) / "config.json").read_text()).get("num_hidden_layers")
        models = {"base": base_model, "sft": str(o / "train-sft"), "safekey": str(o / "train-safekey")}

        def gen_watch(run: Path) -> Callable[[], str]:
            return lambda: f"{count_lines([run / b / 'generations.jsonl' for b in BENCHES])}/{n_eval} generated"

        def train_watch(run: Path) -> Callable[[], str]:
            total = steps_per_epoch * p.epochs
            return lambda: f"step {count_lines([run / 'train_log.jsonl'])}/{total}"

        bench_files = [d / f"{b}.jsonl" for b in BENCHES]
        out: list[Step] = [
            Step("eval-base", self.cli("eval", "safety", "--model", f"hf:{base_model}", *bench_args, *eval_args, "-o", str(o / "eval-base")),
                 [o / "eval-base" / "summary.json"], gen_s, gen_watch(o / "eval-base"),
                 inputs=[Path(base_model), *bench_files], fresh_args=["--overwrite"]),
        ]
        for mode in ("sft", "safekey"):
            out.append(Step(f"train-{mode}", self.cli("train", "run", str(d / "train.jsonl"), "--model", base_model, "--mode", mode,
                                                       "-o", str(o / f"train-{mode}"), "--no-progress", *p.train_args(n_layers)),
                            [o / f"train-{mode}" / "train_stats.json", o / f"train-{mode}" / "config.json"],
                            train_s + (extra_s if mode == "safekey" else 0), train_watch(o / f"train-{mode}"),
                            inputs=[d / "train.jsonl", Path(base_model)], resume_args=["--auto-resume"], fresh_args=["--overwrite"]))
        for mode in ("sft", "safekey"):
            out.append(Step(f"eval-{mode}", self.cli("eval", "safety", "--model", f"hf:{models[mode]}", *bench_args, *eval_args,
                                                     "-o", str(o / f"eval-{mode}")),
                            [o / f"eval-{mode}" / "summary.json"], gen_s, gen_watch(o / f"eval-{mode}"),
                            inputs=[Path(models[mode]), *bench_files], after=[f"train-{mode}"], fresh_args=["--overwrite"]))
        out.append(Step("annotate-responses", ["in-process", "annotate_file", "heuristic", "skip_bad"], [o / f"eval-{r}" / b / "judged.uk.jsonl"
                        for r in models for b in BENCHES], 5, action=self.annotate_responses,
                        inputs=[o / f"eval-{r}" / b / "judged.jsonl" for r in models for b in BENCHES],
                        after=[f"eval-{r}" for r in models]))
        if p.analyses:
            ms = [f"{k}={v}" for k, v in models.items()]
            traces = str(d / "heldout_traces.jsonl")
            lim = ["--limit", str(p.analysis_limit)]
            out += [
                Step("analyze-attention", self.cli("analyze", "attention", traces, *[a for m in ms for a in ("--model", m)], *lim,
                                                   "-o", str(o / "analysis" / "attention.json")),
                     [o / "analysis" / "attention.json"], 25 + 0.5 * p.analysis_limit),
                Step("analyze-probe", self.cli("analyze", "probe", traces, *[a for m in ms for a in ("--model", m)], *lim,
                                               "-o", str(o / "analysis" / "probe.json")),
                     [o / "analysis" / "probe.json"], 25 + 0.4 * p.analysis_limit),
                # prefill the base model's own answers to the held-out harmful prompts
                Step("analyze-kl", self.cli("analyze", "kl", str(o / "eval-base" / "heldout_harmful" / "judged.jsonl"),
                                            "--model-a", ms[0], "--model-b", ms[1], "--model-b", ms[2], "--field", "response",
                                            "--ks", "0,1,2,4,8,16,32", "-o", str(o / "analysis" / "kl.json")),
                     [o / "analysis" / "kl.json"], 30),
            ]
        out.append(Step("report", self.cli("report", str(o), "-o", str(o / "report.html"), "--title",
                                           f"safekey demo: base vs SFT (STAR-1) vs SafeKey on {p.model}"),
                        [o / "report.html"], 10, always=True))
        return out

    def annotate_responses(self) -> None:
        """Mark U and K in every generated response (heuristic labeller) so the report can highlight
        them; responses without a complete <think> block land in the failures sidecar, which is fine."""
        from .annotate.labellers import LabellerConfig
        from .annotate.stage import annotate_file

        for run in ("base", "sft", "safekey"):
            for b in BENCHES:
                judged = self.out / f"eval-{run}" / b / "judged.jsonl"
                annotate_file(judged, judged.with_name("judged.uk.jsonl"), LabellerConfig(), skip_bad=True, overwrite=True,
                              max_failure_share=None)  # a model that never writes <think> fails them all: fine here

    # -- running -----------------------------------------------------------------------------
    def prepare(self) -> str:
        """Copy the starter data into OUT/data (the run is then self-describing) and resolve the model."""
        from .models import resolve_model

        self.data.mkdir(exist_ok=True)
        for name in STARTER:
            src = resource(f"starter/{name}")
            if not src.exists():
                raise SafekeyError(f"starter file {src} is missing; reinstall safekey")
            dst = self.data / name
            text = src.read_text(encoding="utf-8")
            if not dst.exists() or dst.read_text(encoding="utf-8") != text:
                dst.write_text(text, encoding="utf-8")
        t = time.time()
        path = resolve_model(self.plan.model)  # converts the embedded GGUF once (~1 min), cached afterwards
        if time.time() - t > 2:
            self.echo(f"prepared {self.plan.model} in {fmt_duration(time.time() - t)} → {path}")
        return path

    def run(self) -> dict[str, Any]:
        t0 = time.time()
        base = self.prepare()
        steps = self.steps(base)
        for s in steps:
            s.env = {"HF_HUB_OFFLINE": "1"}  # the demo is offline by design
        seconds = StepRunner(self.out, echo=self.echo, what="safekey demo").run(steps)
        return {"seconds": time.time() - t0, "report": self.out / "report.html", "table": results_table(self.out),
                "steps": seconds}


def results_table(out: Path) -> list[dict[str, Any]]:
    """One row per model: harmful rate on the two unsafe sets, over-refusal on the benign set (with CIs)."""
    rows = []
    for run in ("base", "sft", "safekey"):
        p = Path(out) / f"eval-{run}" / "summary.json"
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
