"""A resumable sequence of CLI steps: the runner behind `safekey demo` and `safekey run`.

Why subprocesses: each step is exactly what a user would type, each stage keeps its own resume
logic, and no stage is imported here. A step is skipped on rerun when its command is unchanged and
its outputs exist (``OUT/steps.json``), so an interrupted sequence continues where it stopped. The
ETA scales the remaining estimates by how far off the finished steps' estimates were.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .types import SafekeyError


@dataclass
class Step:
    name: str
    cmd: list[str]
    outputs: list[Path]
    estimate_s: float
    watch: Callable[[], str] | None = None
    action: Callable[[], None] | None = None  # run in-process instead of `cmd` (cmd still identifies the step)
    always: bool = False  # rerun even when finished (a report: cheap, and its inputs may have grown)
    env: dict[str, str] = field(default_factory=dict)  # extra environment (e.g. a launcher's)


def fmt_duration(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def count_lines(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        if p.exists():
            with p.open("rb") as f:
                n += sum(1 for _ in f)
    return n


def cli(*args: str) -> list[str]:
    """The command line of a safekey subcommand run with this interpreter."""
    return [sys.executable, "-m", "safekey.cli.main", *args]


class StepRunner:
    """Runs steps in order, logs each to OUT/logs/NAME.log, records finished ones in OUT/steps.json."""

    def __init__(self, out: Path, *, echo: Callable[[str], None] = print, what: str = "safekey"):
        self.out = Path(out)
        self.echo = echo
        self.what = what  # the command to rerun, named in a failure message
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.state_path = self.out / "steps.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def finished(self, step: Step) -> bool:
        rec = self.state.get(step.name)
        return not step.always and bool(rec) and rec.get("cmd") == step.cmd[1:] and all(p.exists() for p in step.outputs)

    def _save(self) -> None:
        tmp = self.state_path.with_name("steps.json.tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_path)

    def _subprocess(self, s: Step, log: Path, env: dict[str, str]) -> None:
        """Run one CLI step, its output to `log`; every 30 s print how far it got (never mid-line)."""
        ts = last = time.time()
        with log.open("w") as f:
            proc = subprocess.Popen(s.cmd, stdout=f, stderr=subprocess.STDOUT, env={**env, **s.env})
            try:
                while proc.poll() is None:
                    time.sleep(1)
                    if s.watch and time.time() - last >= 30:
                        last = time.time()
                        self.echo(f"      … {s.watch()}  ({fmt_duration(last - ts)} in this step)")
            except BaseException:
                proc.terminate()
                proc.wait()
                raise
        if proc.returncode != 0:
            lines = log.read_text(errors="replace").splitlines()
            tail = lines[-15:]
            # a launcher (torchrun) ends the log with its own report; the rank's one-line error is the cause
            causes = list(dict.fromkeys(line for line in lines[:-15] if line.startswith("error: ")))[:3]
            raise SafekeyError(f"step {s.name} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(causes + tail)
                               + f"\nrerun `{self.what}` to resume")

    def run(self, steps: list[Step]) -> dict[str, float]:
        """Run what is not finished yet; return seconds per step (all recorded steps)."""
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise SafekeyError(f"duplicate step names: {sorted({n for n in names if names.count(n) > 1})}")
        t0 = time.time()
        if threading.current_thread() is threading.main_thread():
            # `kill PID` should stop the running stage too, not orphan it
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        todo = [s for s in steps if not self.finished(s)]
        if len(todo) < len(steps):
            self.echo(f"resuming: {len(steps) - len(todo)} of {len(steps)} steps already done (delete {self.state_path} to redo)")
        est_total = sum(s.estimate_s for s in todo)
        spent_est = spent_real = 0.0
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        for i, s in enumerate(steps, 1):
            if s not in todo:
                continue
            speed = (spent_real / spent_est) if spent_est else 1.0
            eta = (est_total - spent_est) * speed
            self.echo(f"[{i}/{len(steps)}] {s.name}  (elapsed {fmt_duration(time.time() - t0)}, ETA {fmt_duration(eta)})")
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
            self.echo(f"      done in {fmt_duration(took)}")
        return {k: v["seconds"] for k, v in self.state.items()}
