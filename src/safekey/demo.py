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
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import resource
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


@dataclass
class Step:
    name: str
    cmd: list[str]
    outputs: list[Path]
    estimate_s: float
    watch: Callable[[], str] | None = None
    action: Callable[[], None] | None = None  # run in-process instead of `cmd` (cmd still identifies the step)
    always: bool = False  # rerun even when finished (the report: cheap, and its inputs may have grown)


def _fmt(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 60}:{s % 60:02d}"


def _count_lines(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        if p.exists():
            with p.open("rb") as f:
                n += sum(1 for _ in f)
    return n


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
        self.state_path = self.out / "steps.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    # -- the steps ---------------------------------------------------------------------------
    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "safekey.cli.main", *args]

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
            return lambda: f"{_count_lines([run / b / 'generations.jsonl' for b in BENCHES])}/{n_eval} generated"

        def train_watch(run: Path) -> Callable[[], str]:
            total = steps_per_epoch * p.epochs
            return lambda: f"step {_count_lines([run / 'train_log.jsonl'])}/{total}"

        out: list[Step] = [
            Step("eval-base", self.cli("eval", "safety", "--model", f"hf:{base_model}", *bench_args, *eval_args, "-o", str(o / "eval-base")),
                 [o / "eval-base" / "summary.json"], gen_s, gen_watch(o / "eval-base")),
        ]
        for mode in ("sft", "safekey"):
            out.append(Step(f"train-{mode}", self.cli("train", "run", str(d / "train.jsonl"), "--model", base_model, "--mode", mode,
                                                       "-o", str(o / f"train-{mode}"), *p.train_args(n_layers)),
                            [o / f"train-{mode}" / "config.json", o / f"train-{mode}" / "train_log.jsonl"],
                            train_s + (extra_s if mode == "safekey" else 0), train_watch(o / f"train-{mode}")))
        for mode in ("sft", "safekey"):
            out.append(Step(f"eval-{mode}", self.cli("eval", "safety", "--model", f"hf:{models[mode]}", *bench_args, *eval_args,
                                                     "-o", str(o / f"eval-{mode}")),
                            [o / f"eval-{mode}" / "summary.json"], gen_s, gen_watch(o / f"eval-{mode}")))
        out.append(Step("annotate-responses", ["in-process", "annotate_file", "heuristic", "skip_bad"], [o / f"eval-{r}" / b / "judged.uk.jsonl"
                        for r in models for b in BENCHES], 5, action=self.annotate_responses))
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
            self.echo(f"prepared {self.plan.model} in {_fmt(time.time() - t)} → {path}")
        return path

    def _finished(self, step: Step) -> bool:
        rec = self.state.get(step.name)
        return not step.always and bool(rec) and rec.get("cmd") == step.cmd[1:] and all(p.exists() for p in step.outputs)

    def _save(self) -> None:
        tmp = self.state_path.with_name("steps.json.tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_path)

    def _subprocess(self, s: Step, log: Path, env: dict[str, str]) -> None:
        """Run one CLI step, its output to `log`; every 30 s print how far it got."""
        ts = last = time.time()
        with log.open("w") as f:
            proc = subprocess.Popen(s.cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            try:
                while proc.poll() is None:
                    time.sleep(1)
                    if s.watch and time.time() - last >= 30:
                        last = time.time()
                        self.echo(f"      … {s.watch()}  ({_fmt(last - ts)} in this step)")
            except BaseException:
                proc.terminate()
                proc.wait()
                raise
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise SafekeyError(f"step {s.name} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(tail)
                               + "\nrerun `safekey demo` to resume")

    def run(self) -> dict[str, Any]:
        t0 = time.time()
        if threading.current_thread() is threading.main_thread():
            # `kill PID` should stop the running stage too, not orphan it
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        base = self.prepare()
        steps = self.steps(base)
        todo = [s for s in steps if not self._finished(s)]
        if len(todo) < len(steps):
            self.echo(f"resuming: {len(steps) - len(todo)} of {len(steps)} steps already done (delete {self.state_path} to redo)")
        est_total = sum(s.estimate_s for s in todo)
        spent_est = spent_real = 0.0
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        for i, s in enumerate(steps, 1):
            if s not in todo:
                continue
            speed = (spent_real / spent_est) if spent_est else 1.0
            eta = (est_total - spent_est) * speed
            self.echo(f"[{i}/{len(steps)}] {s.name}  (elapsed {_fmt(time.time() - t0)}, ETA {_fmt(eta)})")
            log = self.out / "logs" / f"{s.name}.log"
            ts = time.time()
            if s.action is not None:
                s.action()
            else:
                self._subprocess(s, log, env)
            took = time.time() - ts
            spent_est += s.estimate_s
            spent_real += took
            self.state[s.name] = {"cmd": s.cmd[1:], "seconds": round(took, 1)}
            self._save()
            self.echo(f"      done in {_fmt(took)}")
        total = time.time() - t0
        return {"seconds": total, "report": self.out / "report.html", "table": results_table(self.out),
                "steps": {k: v["seconds"] for k, v in self.state.items()}}


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
