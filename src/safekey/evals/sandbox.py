"""Run untrusted (model-written) Python in a contained child process.

Why: HumanEval grading executes model output. The reference ran it in-process and ignored
timeouts; one ``while True`` or ``os.fork()`` loop hung or took down the whole evaluation. Here
every program runs in a fresh interpreter (``python -I``: no user site, no PYTHON* variables, the
script folder not on ``sys.path``) inside a temporary working directory, with:

* limits set with ``resource.setrlimit`` in the child before exec: RLIMIT_AS (memory),
  RLIMIT_CPU (cpu seconds), RLIMIT_NPROC (fork bombs), RLIMIT_FSIZE (disk/stdout flooding);
* a wall-clock timeout, after which the whole process group is SIGKILLed (``start_new_session``
  + ``os.killpg``);
* no network, by one of two mechanisms, chosen once per process and reported as ``isolation``:

  - ``"netns"``: ``unshare --net --pid --fork --kill-child`` (util-linux). The program gets an
    empty network namespace (no interface but a downed loopback, so every connect fails) and its
    own PID namespace, so every process it starts dies with it even if it leaves the process
    group. As root, the program also runs under an unprivileged throw-away uid (RLIMIT_NPROC is
    not enforced for root); as a normal user, an unprivileged user namespace is used instead.
  - ``"audit"``: fallback when namespaces are unavailable. A ``sys.addaudithook`` prelude makes
    every ``socket.*`` event, process spawning (``subprocess``, ``os.system``, ``os.exec*``,
    ``os.posix_spawn``) and ``ctypes`` loading raise ``PermissionError``. Audit hooks cannot be
    removed from Python code, but this is weaker than a namespace (a C extension could bypass it).

Nothing the program prints can flood memory: stdout/stderr go to files under RLIMIT_FSIZE and only
their tails are read back.
"""

from __future__ import annotations

import itertools
import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Isolation = Literal["auto", "bwrap", "netns", "audit"]
TMPFS_MB = 64  # each private tmpfs in bwrap mode (/tmp, /dev/shm, /var/tmp)

# The script every program runs under: reads the run's secret, runs the candidate, and proves
# that the candidate returned by writing the secret back (see the module docstring).
HARNESS = '''\
import os as _h_os, sys as _h_sys
_h_in, _h_out, _h_path = int(_h_sys.argv[1]), int(_h_sys.argv[2]), _h_sys.argv[3]
_h_secret = _h_os.read(_h_in, 64)
_h_os.close(_h_in)
with open(_h_path, encoding="utf-8") as _h_f:
    _h_code = compile(_h_f.read(), _h_path, "exec")
del _h_sys.argv[1:3]
exec(_h_code, {"__name__": "__main__", "__file__": _h_path, "__builtins__": __builtins__})
_h_os.write(_h_out, _h_secret)
_h_os.close(_h_out)
'''
_warned: set[str] = set()

# Unprivileged uids used when we are root (RLIMIT_NPROC does not apply to uid 0). Each run gets its
# own uid so a fork bomb in one run cannot exhaust the process budget of a concurrent one.
_UID_BASE, _UID_SPAN = 120_000, 60_000
_uid_counter = itertools.count()
_uid_lock = threading.Lock()
_probe_lock = threading.Lock()
_probe_cache: dict[str, tuple[str, list[str]] | None] = {}

AUDIT_PRELUDE = '''\
import sys as _sbx_sys
def _sbx_hook(event, args):
    if event.startswith("socket.") or event in (
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn",
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
    ):
        raise PermissionError(f"sandbox: {event} is blocked")
_sbx_sys.addaudithook(_sbx_hook)
del _sbx_hook, _sbx_sys
'''


MIN_PROCESS_MB = 32  # an interpreter needs about this much address space to start


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program. ``cpu_s`` defaults to the wall timeout + 1 s.

    `memory_mb` bounds the whole sandbox, not one process: RLIMIT_AS is per process, so five
    children of 500 MB each passed a 1 GB per-process limit. Each process may map
    ``memory_mb / max_procs`` (:meth:`per_process_mb`) and at most `max_procs` run (RLIMIT_NPROC),
    so their sum never exceeds `memory_mb`."""

    timeout_s: float = 10.0
    memory_mb: int = 2048
    cpu_s: int | None = None
    max_procs: int = 16
    max_file_mb: int = 16

    def __post_init__(self) -> None:
        if self.max_procs < 1 or self.memory_mb // self.max_procs < MIN_PROCESS_MB:
            raise ValueError(f"sandbox limits: {self.memory_mb} MB over {self.max_procs} processes leaves under "
                             f"{MIN_PROCESS_MB} MB each; raise memory_mb or lower max_procs")

    def per_process_mb(self) -> int:
        return self.memory_mb // self.max_procs


@dataclass
class SandboxResult:
    status: str  # "passed" (the program ran to its end: proof received) | "failed" (non-zero exit) | "timeout" (wall or cpu limit) | "error" (could not run)
    reason: str  # short human-readable cause: "ok", "AssertionError", "timeout after 10s", "MemoryError", …
    returncode: int | None
    duration_s: float
    isolation: str
    stdout: str = ""
    stderr: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# choosing the interpreter and the isolation mechanism


def _world_executable(path: str) -> bool:
    """True when an unprivileged uid can run `path` (every parent folder searchable by others)."""
    p = Path(path).resolve()
    try:
        if not (p.stat().st_mode & stat.S_IXOTH):
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in p.parents)
    except OSError:
        return False


def _python_candidates() -> list[str]:
    cands = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
        w = shutil.which(name)
        if w:
            cands.append(w)
    cands += ["/usr/bin/python3", "/usr/local/bin/python3"]
    seen: list[str] = []
    for c in cands:
        if c and c not in seen and Path(c).exists():
            seen.append(c)
    return seen


def _run_quiet(cmd: list[str], preexec: Callable[[], None] | None = None) -> bool:
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=20, preexec_fn=preexec, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def _netns_prefix() -> tuple[list[str], str] | None:
    """The namespace wrapper and the interpreter to use with it, or None when unavailable."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return None
    base = [unshare, "--net", "--pid", "--fork", "--kill-child"]
    if os.geteuid() == 0:
        # the uid is appended per run (see _wrap); probe with one of them
        for py in _python_candidates():
            if _world_executable(py) and _run_quiet(
                base + ["--setuid", str(_UID_BASE), "--setgid", str(_UID_BASE), "--", py, "-I", "-c", "pass"]
            ):
                return base, py
        return None
    base = base + ["--map-root-user"]
    py = sys.executable
    if _run_quiet(base + ["--", py, "-I", "-c", "pass"]):
        return base, py
    return None


def _bwrap_args(py: str) -> list[str]:
    """bubblewrap's arguments up to the command: read-only system paths, private everything else."""
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin", "lib32"):
        if Path(f"/{link}").is_symlink():
            args += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
        elif Path(f"/{link}").is_dir():
            args += ["--ro-bind", f"/{link}", f"/{link}"]
    prefix = Path(py).resolve().parent.parent
    if not str(prefix).startswith("/usr"):
        args += ["--ro-bind", str(prefix), str(prefix)]
    size = str(TMPFS_MB * 1024 * 1024)
    args += ["--proc", "/proc", "--dev", "/dev"]
    for d in ("/tmp", "/dev/shm", "/var/tmp"):
        args += ["--size", size, "--tmpfs", d]
    return args + ["--dir", "/sandbox", "--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                   "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8"]


def _bwrap_prefix() -> tuple[list[str], str] | None:
    bwrap = shutil.which("bwrap")
    if bwrap is None or not sys.platform.startswith("linux"):
        return None
    root = os.geteuid() == 0
    for py in _python_candidates():
        if root and not _world_executable(py):
            continue  # the throw-away uid must reach the interpreter
        pre = (lambda: (os.setgid(_UID_BASE), os.setuid(_UID_BASE))) if root else None
        if _run_quiet([bwrap, *_bwrap_args(py), py, "-I", "-c", "pass"], preexec=pre):
            return [bwrap], py
    return None


def _probe(mode: str) -> tuple[list[str], str] | None:
    with _probe_lock:
        if mode not in _probe_cache:
            found = _bwrap_prefix() if mode == "bwrap" else _netns_prefix()
            _probe_cache[mode] = (found[1], found[0]) if found else None
        hit = _probe_cache[mode]
    return (list(hit[1]), hit[0]) if hit is not None else None


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        print(f"warning: {msg}", file=sys.stderr)


def isolation_mode(requested: Isolation = "auto") -> tuple[str, list[str], str]:
    """(mode, wrapper prefix, interpreter) for `requested`; probed once per process and cached.

    ``auto`` prefers bubblewrap, then network/PID namespaces, then the audit hook (printing a
    warning for the weaker modes, which do not hide the file system).
    """
    if requested not in ("auto", "bwrap", "netns", "audit"):
        raise ValueError(f"unknown isolation {requested!r}; use auto, bwrap, netns or audit")
    if requested in ("auto", "bwrap"):
        hit = _probe("bwrap")
        if hit is not None:
            return "bwrap", hit[0], hit[1]
        if requested == "bwrap":
            raise RuntimeError("bubblewrap is not available here (apt-get install bubblewrap; needs user namespaces)")
        _warn_once("sandbox: bubblewrap (bwrap) unavailable; model-written code runs with network/PID isolation "
                   "only and can read world-readable files (install the Debian package 'bubblewrap')")
    if requested in ("auto", "netns"):
        hit = _probe("netns")
        if hit is not None:
            return "netns", hit[0], hit[1]
        if requested == "netns":
            raise RuntimeError("network namespaces are not available here (need util-linux unshare and namespace rights)")
        _warn_once("sandbox: no namespaces available; falling back to the audit-hook sandbox (weakest)")
    py = sys.executable
    if os.geteuid() == 0:  # we will drop to an unprivileged uid: it must be able to run the interpreter
        py = next((c for c in _python_candidates() if _world_executable(c)), sys.executable)
    return "audit", [], py


def _next_uid() -> int:
    with _uid_lock:
        return _UID_BASE + (os.getpid() * 64 + next(_uid_counter)) % _UID_SPAN


def _preexec(limits: Limits) -> Callable[[], None]:
    mem = limits.per_process_mb() * 1024 * 1024
    cpu = int(limits.cpu_s if limits.cpu_s is not None else limits.timeout_s + 1)
    fsize = limits.max_file_mb * 1024 * 1024
    nproc = limits.max_procs

    def fn() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return fn


def _tail(path: Path, n: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


_SIGNAL_REASONS = {
    signal.SIGXCPU: "cpu time limit exceeded (SIGXCPU)",
    signal.SIGXFSZ: "output size limit exceeded (SIGXFSZ)",
    signal.SIGKILL: "killed (SIGKILL)",
    signal.SIGSEGV: "segmentation fault (SIGSEGV)",
}


def _exception_line(stderr: str) -> str:
    """The final ``SomeError: message`` line of a traceback, else the last non-empty line."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head and " " not in head and (head.endswith(("Error", "Exception", "Exit", "Interrupt")) or head == "AssertionError"):
            return ln[:300]
    return lines[-1][:300] if lines else ""


@dataclass
class Spawned:
    """A started sandboxed program, its output files and the throw-away uid it runs as."""

    proc: subprocess.Popen
    out_path: Path
    err_path: Path
    uid: int | None
    mode: str
    prefix: list[str]

    def wait(self, timeout: float) -> tuple[int, bool]:
        """(return code, timed out); the whole group is killed either way."""
        timed_out = False
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(self.proc.pid)
            rc = self.proc.wait()
        finally:
            self.kill()
        return rc, timed_out

    def kill(self) -> None:
        _kill_group(self.proc.pid)  # stragglers that stayed in the group after the leader exited
        if self.uid is not None and self.mode == "audit":
            _kill_uid(self.uid)  # no PID namespace here: also catch children that left the group (setsid)


def spawn(tmp: Path, files: dict[str, str], script: str, fds: tuple[int, ...], *, limits: Limits,
          isolation: Isolation = "auto", file_args: tuple[str, ...] = (), extra_args: tuple[str, ...] = (),
          code: str | None = None) -> Spawned:
    """Start `script` (one of `files`, written to `tmp`) under the isolation and limits: argv is
    ``script FD… FILE… EXTRA…`` with FILE the in-sandbox paths of `file_args`. With `code`, that
    program runs as ``python -I -c CODE`` instead and no file is needed: nothing of it lies on a path
    another sandbox could open or rewrite. Raises OSError / SubprocessError when the sandbox itself
    cannot start."""
    mode, prefix, py = isolation_mode(isolation)
    tmp.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in files.items():
        paths[name] = tmp / name
        paths[name].write_text(text, encoding="utf-8")
    out_path, err_path = tmp / "stdout.txt", tmp / "stderr.txt"
    kwargs: dict[str, Any] = {}
    cmd = list(prefix)
    uid: int | None = None
    if os.geteuid() == 0:
        uid = _next_uid()
        for f in (tmp, *paths.values()):
            os.chown(f, uid, uid)
        if mode == "netns":
            cmd += ["--setuid", str(uid), "--setgid", str(uid)]
        else:
            kwargs.update(user=uid, group=uid, extra_groups=[])
    fd_args = [str(fd) for fd in fds]
    if mode == "bwrap":
        binds = [a for name, f in paths.items() for a in ("--ro-bind", str(f), f"/sandbox/{name}")]
        run = ["-c", code] if code is not None else [f"/sandbox/{script}"]
        cmd += [*_bwrap_args(py), *binds, py, "-I", *run, *fd_args, *[f"/sandbox/{n}" for n in file_args], *extra_args]
        cwd = "/"
    else:
        run = ["-c", code] if code is not None else [str(paths[script])]
        cmd += (["--"] if prefix else []) + [py, "-I", *run, *fd_args, *[str(paths[n]) for n in file_args], *extra_args]
        cwd = str(tmp)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}
    with out_path.open("wb") as out_f, err_path.open("wb") as err_f:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f, cwd=cwd, env=env,
                                start_new_session=True, preexec_fn=_preexec(limits), close_fds=True, pass_fds=fds,
                                **kwargs)
    return Spawned(proc, out_path, err_path, uid, mode, prefix)


def signal_reason(rc: int, prefix: list[str]) -> tuple[str, str] | None:
    """(status, reason) when `rc` says the program was killed by a signal, else None."""
    sig = -rc if rc < 0 else (rc - 128 if prefix and rc > 128 else 0)
    if not sig:
        return None
    try:
        name = _SIGNAL_REASONS.get(signal.Signals(sig), f"killed by {signal.Signals(sig).name}")
    except ValueError:
        name = f"killed by signal {sig}"
    return ("timeout" if sig == signal.SIGXCPU else "failed"), name


def run_python(source: str, *, limits: Limits = Limits(), isolation: Isolation = "auto") -> SandboxResult:
    """Run `source` as a script in a contained child. Never raises for anything the program does.

    "passed" means the program ran to its last statement (the harness's proof came back), not
    merely exit status 0. Code in the same interpreter can reach that proof, so this is no verdict
    against hostile code: HumanEval verdicts come from :mod:`safekey.evals.code_verdict`."""
    mode = isolation_mode(isolation)[0]
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="safekey-sbx-"))
    secret = secrets.token_hex(16).encode()
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    try:
        harness = (AUDIT_PRELUDE if mode == "audit" else "") + HARNESS
        os.write(w_in, secret)
        os.close(w_in)
        w_in = -1
        try:
            sp = spawn(tmp, {"program.py": source, "harness.py": harness}, "harness.py", (r_in, w_out), limits=limits,
                       isolation=isolation, file_args=("program.py",))
        except (OSError, subprocess.SubprocessError) as e:
            return SandboxResult("error", f"could not start sandbox: {e}", None, time.monotonic() - t0, mode)
        os.close(w_out)  # the child holds the only write end now
        w_out = -1
        rc, timed_out = sp.wait(limits.timeout_s)
        proof = _read_available(r_out)
        dur = time.monotonic() - t0
        stdout, stderr = _tail(sp.out_path), _tail(sp.err_path)
        if timed_out:
            return SandboxResult("timeout", f"timeout after {limits.timeout_s:g}s (process group killed)", rc, dur, mode, stdout, stderr)
        killed = signal_reason(rc, sp.prefix)
        if killed:
            return SandboxResult(killed[0], killed[1], rc, dur, mode, stdout, stderr)
        if rc == 0 and proof == secret:
            return SandboxResult("passed", "ok", rc, dur, mode, stdout, stderr)
        if rc == 0:
            return SandboxResult("failed", "exited before the program finished (no completion proof)", rc, dur, mode,
                                 stdout, stderr)
        return SandboxResult("failed", _exception_line(stderr) or f"exit status {rc}", rc, dur, mode, stdout, stderr)
    finally:
        for fd in (r_in, w_in, r_out, w_out):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


def _read_available(fd: int, n: int = 256) -> bytes:
    """What the child wrote to the proof pipe, without blocking on a writer that never closes."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, n)
    except BlockingIOError:
        return b""


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return  # already gone


def _kill_uid(uid: int) -> None:
    """SIGKILL every process running as this run's private throw-away uid (root, audit mode only)."""
    import psutil

    for p in psutil.process_iter(["uids"]):
        uids = p.info.get("uids")
        if uids is not None and uid in (uids.real, uids.effective):
            try:
                p.kill()
            except psutil.Error:
                continue  # exited meanwhile


def run_many(
    sources: Sequence[str],
    *,
    limits: Limits = Limits(),
    isolation: Isolation = "auto",
    workers: int = 2,
    on_result: Callable[[int, SandboxResult], None] | None = None,
) -> list[SandboxResult]:
    """Run programs in parallel (threads only wait on children), results in input order."""
    isolation_mode(isolation)  # probe once before the threads start
    results: list[SandboxResult | None] = [None] * len(sources)

    def one(i: int) -> None:
        results[i] = run_python(sources[i], limits=limits, isolation=isolation)
        if on_result is not None:
            on_result(i, results[i])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        list(ex.map(one, range(len(sources))))
    return [r for r in results if r is not None]


__all__ = ["AUDIT_PRELUDE", "Limits", "SandboxResult", "Spawned", "isolation_mode", "run_many", "run_python", "signal_reason",
           "spawn"]
