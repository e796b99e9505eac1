"""A resumable sequence of CLI steps: the runner behind `safekey demo` and `safekey run`.

Why subprocesses: each step is exactly what a user would type, each stage keeps its own resume
logic, and no stage is imported here.

The promises (README, "Reliability"):

* **A step is done only for the inputs it ran on.** Each step's fingerprint covers its command,
  its extra environment, the contents of the files and folders it reads (``inputs``), the
  fingerprints of the steps it depends on (``after``) and the environment variables that change
  what a stage does. ``OUT/steps.json`` records the fingerprint a step started and finished with;
  a step is skipped only when that fingerprint is unchanged and its outputs exist. A changed
  fingerprint reruns the step from scratch (``fresh_args``, e.g. ``--overwrite``), and so, through
  their own fingerprints, every step after it. An interrupted step with the same fingerprint is
  continued (``resume_args``, e.g. a training's ``--auto-resume``).
* **No orphans.** Every step runs under :mod:`safekey.stepguard`, which kills the step's whole
  process tree when the runner dies, however it dies (kill -9 of the runner or of its group), or is
  forked by :mod:`safekey.stephost` (a `safekey` step: torch and transformers imported once per
  run, not once per step), which makes the same promise.
* **One runner per folder.** A second runner on the same OUT is refused, and so is a runner while a
  step of a killed one is still alive (its pid is named).
* Logs and ``steps.json`` carry no credentials (:func:`safekey.redact.redact_secrets`).

The ETA scales the remaining estimates by how far off the finished steps' estimates were.
"""

from __future__ import annotations

import hashlib
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

from .redact import redact_secrets
from .stephost import WarmHost, shared_host, warm_argv
from .types import SafekeyError

# environment variables that change what a stage reads or produces (part of every step fingerprint)
RELEVANT_ENV = ("HF_HUB_OFFLINE", "SAFEKEY_DATA_DIR", "SAFEKEY_HOME", "HF_HOME", "CUDA_VISIBLE_DEVICES")
# files inside an input folder that do not define its content (locks, temp files, the training's
# resumable checkpoints: the exported model beside them is what later steps read)
_SKIP_DIRS = {"checkpoints", "logs", "__pycache__"}
_SKIP_SUFFIXES = (".lock", ".tmp")


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
    inputs: list[Path] = field(default_factory=list)  # files / folders read: their contents are fingerprinted
    after: list[str] = field(default_factory=list)  # steps whose results this one reads
    resume_args: list[str] = field(default_factory=list)  # appended when continuing (or first starting) it
    fresh_args: list[str] = field(default_factory=list)  # appended when its inputs changed since it last ran
    writes: dict[Path, str] = field(default_factory=dict)  # files (its stage config) written before it runs


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


class Digests:
    """Content hashes of files, cached by (size, mtime, ctime, inode) in OUT/.digests.json: a 16 GB
    model folder is read once, not at every rerun; any write to a file changes its stat and its hash
    (ctime too: ``touch -r`` restores a swapped file's mtime, nothing in userspace sets its ctime)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.cache: dict[str, list] = json.loads(path.read_text()) if path.exists() else {}
        except (json.JSONDecodeError, OSError):
            self.cache = {}  # only a cache: every file is hashed again, nothing is trusted from it
        if not isinstance(self.cache, dict):
            self.cache = {}

    def file(self, p: Path) -> str:
        st = p.stat()
        key = str(p.resolve())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = self.cache.get(key)
        # only a cache: an entry of another shape (short, edited, an older layout) is hashed again
        if isinstance(hit, list) and len(hit) == len(stamp) + 1 and hit[:-1] == stamp and isinstance(hit[-1], str):
            return hit[-1]
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self.cache[key] = [*stamp, h.hexdigest()]
        return h.hexdigest()

    def of(self, p: Path) -> str:
        """A file's content hash; a folder's hash over its files' relative paths and contents."""
        p = Path(p)
        if p.is_file():
            return self.file(p)
        if not p.is_dir():
            return "missing"
        h = hashlib.sha256()
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                    continue
                f = Path(root) / name
                h.update(f"{f.relative_to(p)}\0{self.file(f)}\0".encode())
        return h.hexdigest()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.cache))
        tmp.replace(self.path)


def _alive(pid: int | None, created: float | None) -> bool:
    """True when `pid` runs and is the process that was recorded (not a recycled pid)."""
    import psutil

    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its (new) parent
            return False
        return created is None or abs(p.create_time() - created) < 1.0
    except psutil.Error:
        return False


def _created(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class StepRunner:
    """Runs steps in order, logs each to OUT/logs/NAME.log, records them in OUT/steps.json."""

    def __init__(self, out: Path, *, echo: Callable[[str], None] = print, what: str = "safekey"):
        self.out = Path(out)
        self.echo = echo
        self.what = what  # the command to rerun, named in a failure message
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.state_path = self.out / "steps.json"
        self.pid_path = self.out / "running.json"
        self._host_failed = False
        self.state: dict[str, Any] = self._load_state()
        self.digests = Digests(self.out / ".digests.json")
        self.fps: dict[str, str] = {}

    def _load_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {}
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            raise SafekeyError(f"{self.state_path}: unreadable ({type(e).__name__}); delete it to rerun every step") from None
        if not isinstance(state, dict) or not all(isinstance(v, dict) for v in state.values()):
            raise SafekeyError(f"{self.state_path}: not a steps file (a JSON object of steps); delete it to rerun every step")
        return state

    # -- fingerprints -----------------------------------------------------------------------------
    def fingerprint(self, step: Step) -> str:
        """What the step consumes: command, environment, input contents, upstream fingerprints."""
        blob = {
            "cmd": step.cmd[1:],
            "env": step.env,
            "environ": {k: os.environ.get(k) for k in RELEVANT_ENV},
            "inputs": {str(p): self.digests.of(Path(p)) for p in step.inputs},
            "after": {n: self.fps.get(n) or (self.state.get(n) or {}).get("fingerprint") for n in step.after},
        }
        from . import __version__

        blob["safekey"] = __version__
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def status(self, step: Step, fp: str) -> str:
        """'done' (skip), 'resume' (same inputs, not finished), 'new' (never started) or 'changed'."""
        rec = self.state.get(step.name)
        if not rec or "fingerprint" not in rec:
            return "new"
        if rec["fingerprint"] != fp:
            return "changed"
        if rec.get("status") == "done" and not step.always and all(Path(p).exists() for p in step.outputs):
            return "done"
        return "resume"

    def _save(self) -> None:
        from .atomic import write_text_atomic

        write_text_atomic(self.state_path, redact_secrets(json.dumps(self.state, indent=1)))
        self.digests.save()

    # -- one runner at a time -------------------------------------------------------------------
    def _refuse_live_step(self) -> None:
        """A killed runner's step may still be stopping (or its guard was killed too): wait for it."""
        if not self.pid_path.exists():
            return
        try:
            rec = json.loads(self.pid_path.read_text())
        except (json.JSONDecodeError, OSError) as e:  # written atomically, so only a hand-edit gets here
            from .store import log_warning

            log_warning(f"{self.pid_path}: unreadable ({type(e).__name__}); assuming no earlier step is still running")
            return
        for who in ("guard", "step"):
            pid = rec.get(f"{who}_pid")
            if _alive(pid, rec.get(f"{who}_created")):
                raise SafekeyError(f"{self.out}: step {rec.get('step')} of an earlier run is still running (pid {pid}); "
                                   f"wait for it to end or stop it (kill {pid}), then rerun")

    def _lock(self):
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.out / ".runner.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = ""
            try:
                holder = f" (pid {json.loads(self.pid_path.read_text()).get('runner_pid')})"
            except (OSError, json.JSONDecodeError, AttributeError):
                holder = ""
            raise SafekeyError(f"{self.out} is being run by another process{holder}; wait for it or stop it") from None
        return lock

    # -- running -----------------------------------------------------------------------------------
    @staticmethod
    def _write_configs(s: Step) -> None:
        """A step's config files, rewritten only when their content changes (their stat is part of
        the digest cache; the content is what the fingerprint sees)."""
        from .atomic import write_text_atomic

        for path, text in s.writes.items():
            p = Path(path)
            if not p.exists() or p.read_text(encoding="utf-8") != text:
                write_text_atomic(p, text)

    def _subprocess(self, s: Step, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        """Run one CLI step under the guard (or forked by the warm host), its output (credentials
        redacted) to `log`; every 30 s print how far it got (never mid-line)."""
        ts = last = time.time()
        full_env = {**env, **s.env}
        host = self._host_for(cmd, full_env, log)
        with log.open("w", encoding="utf-8") as f:
            proc = None
            if host is not None:
                try:
                    proc = host.start(warm_argv(cmd) or [], os.getcwd(), full_env)
                    guard, step_pid = host.pid, proc.pid
                except OSError as e:  # the host went away between two steps: this one starts cold
                    self.echo(f"      (step starts cold: {e})")
            if proc is None:
                guarded = [sys.executable, "-m", "safekey.stepguard", str(os.getpid()), "--", *cmd]
                proc = subprocess.Popen(guarded, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                                        start_new_session=True)  # a kill of our process group leaves the guard to clean up
                guard, step_pid = proc.pid, None
            pump = threading.Thread(target=_pump, args=(proc.stdout, f), daemon=True)
            pump.start()
            self._write_pids(s, guard, step_pid, ended=proc.poll)
            try:
                while proc.poll() is None:
                    time.sleep(0.5)
                    if s.watch and time.time() - last >= 30:
                        last = time.time()
                        self.echo(f"      … {s.watch()}  ({fmt_duration(last - ts)} in this step)")
            except BaseException:
                proc.send_signal(signal.SIGTERM)  # the guard (or the host) stops the whole tree
                proc.wait()
                raise
            finally:
                pump.join(timeout=10)
                proc.stdout.close()
                self.pid_path.unlink(missing_ok=True)
        if proc.returncode != 0:
            lines = log.read_text(errors="replace").splitlines()
            tail = lines[-15:]
            # a launcher (torchrun) ends the log with its own report; the rank's one-line error is the cause
            causes = list(dict.fromkeys(line for line in lines[:-15] if line.startswith("error: ")))[:3]
            raise SafekeyError(f"step {s.name} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(causes + tail)
                               + f"\nrerun `{self.what}` to resume")

    def _host_for(self, cmd: list[str], env: dict[str, str], log: Path) -> WarmHost | None:
        """This process's warm host for a `safekey` step it can serve; None = start the step cold.
        A host that cannot start is said once, then skipped."""
        if warm_argv(cmd) is None or self._host_failed:
            return None
        try:
            return shared_host(env, log.with_name("stephost.log"))
        except OSError as e:
            self._host_failed = True
            self.echo(f"      (steps start cold: {e})")
            return None

    def _write_pids(self, s: Step, guard: int, step_pid: int | None = None, ended=lambda: None) -> None:
        """OUT/running.json: the guard's and the step's pids. The guard starts the step within
        milliseconds (seconds on a loaded machine); a step that ended before it was seen is not waited
        for (the 10 s poll used to run out on every quick step: 40 s of a 4-step test asleep)."""
        import psutil

        from .atomic import write_text_atomic

        for _ in range(0 if step_pid else 200):
            if ended() is not None:
                break
            try:
                kids = psutil.Process(guard).children()
            except psutil.Error:
                break
            if kids:
                step_pid = kids[0].pid
                break
            time.sleep(0.05)
        write_text_atomic(self.pid_path, json.dumps({
            "step": s.name, "runner_pid": os.getpid(), "guard_pid": guard, "guard_created": _created(guard),
            "step_pid": step_pid, "step_created": _created(step_pid) if step_pid else None}) + "\n")

    def run(self, steps: list[Step]) -> dict[str, float]:
        """Run what is not finished yet; return seconds per step (all recorded steps)."""
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise SafekeyError(f"duplicate step names: {sorted({n for n in names if names.count(n) > 1})}")
        lock = self._lock()
        try:
            self._refuse_live_step()
            return self._run(steps)
        finally:
            lock.release()

    def _run(self, steps: list[Step]) -> dict[str, float]:
        t0 = time.time()
        if threading.current_thread() is threading.main_thread():
            # `kill PID` should stop the running stage too, not orphan it
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        # a first look for the ETA and the resume line (upstream changes may add more while running)
        for s in steps:
            self._write_configs(s)
        first = {s.name: self.status(s, self.fingerprint(s)) for s in steps}
        self.fps = {}
        n_done = sum(1 for v in first.values() if v == "done")
        if n_done:
            self.echo(f"resuming: {n_done} of {len(steps)} steps already done (delete {self.state_path} to redo)")
        est_total = sum(s.estimate_s for s in steps if first[s.name] != "done")
        spent_est = spent_real = 0.0
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        for i, s in enumerate(steps, 1):
            self._write_configs(s)
            fp = self.fingerprint(s)
            self.fps[s.name] = fp
            st = self.status(s, fp)
            if st == "done":
                continue
            if st == "changed":
                self.echo(f"[{i}/{len(steps)}] {s.name}: its inputs changed since it last ran — redoing it")
            extra = s.fresh_args if st == "changed" else s.resume_args
            speed = (spent_real / spent_est) if spent_est else 1.0
            eta = max(0.0, est_total - spent_est) * speed
            self.echo(f"[{i}/{len(steps)}] {s.name}  (elapsed {fmt_duration(time.time() - t0)}, ETA {fmt_duration(eta)})")
            log = self.out / "logs" / f"{s.name}.log"
            self.state[s.name] = {"cmd": s.cmd[1:], "fingerprint": fp, "status": "running"}
            self._save()
            ts = time.time()
            if s.action is not None:
                s.action()
            else:
                self._subprocess(s, [*s.cmd, *extra], log, env)
            took = time.time() - ts
            spent_est += s.estimate_s
            spent_real += took
            # the step's own outputs are now inputs of later steps: fingerprint those afresh
            self.state[s.name] = {"cmd": s.cmd[1:], "fingerprint": fp, "status": "done", "seconds": round(took, 1)}
            self._save()
            self.echo(f"      done in {fmt_duration(took)}")
        return {k: v.get("seconds", 0.0) for k, v in self.state.items()}


def _pump(src, dst) -> None:
    """Copy a child's output to its log line by line, credentials redacted (a server that echoes an
    Authorization header or a URL with a key into an error must not put it on disk)."""
    for raw in iter(src.readline, b""):
        dst.write(redact_secrets(raw.decode("utf-8", "replace")))
        dst.flush()
    src.close()
