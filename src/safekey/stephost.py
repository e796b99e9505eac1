"""A warm step host: one process per `safekey run` (or test worker) imports torch, transformers and
TRL once, then forks each `safekey …` step from there.

Why: a step process spends ~6 CPU-s importing torch and transformers' Trainer before it reads a
byte (`python -X importtime`: nothing single to drop); an experiment runs tens of steps, the test
suite hundreds. A fork of an importer that has computed nothing yet (no thread pool, no CUDA
context) starts the step in milliseconds with the same modules. Everything the guard promises
still holds, from here (`safekey.stepguard`): the host lives in a session of its own, dies with
the runner (``PR_SET_PDEATHSIG``), is the subreaper of what a step leaves behind, and stops every
descendant after each step and on SIGTERM / SIGINT / SIGHUP.

What makes a step eligible (else the runner starts it the cold way, under the guard): it is this
interpreter's `safekey` CLI, and its environment equals the host's in every variable a library
reads at import time (:func:`import_sensitive`: HF_HUB_OFFLINE, cache paths, HOME, OMP_NUM_THREADS
…); the rest (SAFEKEY_*, API keys) is set in the step before it runs. ``SAFEKEY_WARM_STEPS=0``
turns the host off, ``=1`` on. Unset, it is on except where a GPU device node exists: CUDA does
not survive a fork after the driver was initialised, and a library's import may ask for the device
count; there a step runs minutes to hours and the 6 s do not matter.

Protocol over a Unix SOCK_SEQPACKET pair, one step at a time: the client sends one JSON message
``{"argv": [...], "cwd": "...", "env": {...}, "session": bool}`` with the step's stdout (and stderr)
descriptors attached (SCM_RIGHTS); the host answers ``{"pid": N}`` when the step runs and
``{"rc": N}`` (−N: killed by signal N) when it ended and its leftovers are stopped. EOF on the
socket ends the host.

Usage: ``python -m safekey.stephost PARENT_PID FD`` (Linux only).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from .stepguard import arm, kill_tree

# imported once in the host; a step imports anything else itself
PRELOAD = ("torch", "transformers", "transformers.trainer", "trl", "peft", "accelerate", "datasets", "safekey.cli.main",
           "safekey.train.run", "safekey.evals.safety")
CLI_MODULE = "safekey.cli.main"
MAX_MESSAGE = 1 << 20  # one request: argv + environment


# (accelerate reads its ACCELERATE_* settings when its state is built, at run time: not here)
_SENSITIVE_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "USE_", "OMP_", "KMP_", "MKL_", "OPENBLAS",
                       "CUDA", "NCCL", "PYTHON", "LD_", "TOKENIZERS", "DATASETS", "XDG_", "TRITON", "VLLM")


# set by libraries on themselves in a process that used them (torch: inductor's cache, the CUDA check;
# scikit-learn / joblib at import: Intel OpenMP's fork settings): a parent's copy says nothing about
# how the host imported
_SELF_SET = {"TORCHINDUCTOR_CACHE_DIR", "PYTORCH_NVML_BASED_CUDA_CHECK", "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK"}


def import_sensitive(env: dict[str, str]) -> dict[str, str]:
    """The variables some library may read once, at import (a forked step would see the host's)."""
    return {k: v for k, v in env.items() if (k == "HOME" or k.startswith(_SENSITIVE_PREFIXES)) and k not in _SELF_SET}


def _send(sock: socket.socket, obj: dict) -> None:
    sock.sendall((json.dumps(obj) + "\n").encode())


def _run_step(req: dict, out_fd: int, err_fd: int) -> None:
    """In the forked child: become the step (`safekey ARGV` in `cwd` with `env`, output to the two
    descriptors); never returns."""
    code = 1
    try:
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: the CLI's own "interrupted" line
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        for fd in {out_fd, err_fd}:
            os.close(fd)
        if req.get("session"):
            os.setsid()
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        argv = req["argv"]
        sys.argv = ["safekey", *argv]
        from .cli.main import main

        try:
            main(argv)
            code = 0
        except SystemExit as e:  # the CLI's own exit status
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int | None):
                print(e.code, file=sys.stderr)
        import atexit
        import threading

        threading._shutdown()  # what an interpreter's exit does, in its order: wait for non-daemon threads,
        atexit._run_exitfuncs()  # then the exit handlers (log handlers, temp files)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import contextlib

        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe at exit: nothing left to say on it
                f.flush()
        os._exit(code)


def serve(parent: int, fd: int) -> int:
    if not arm(parent):
        return 143
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # an optional stack part: the step imports (or misses) it itself
    sock = socket.socket(fileno=fd)  # SOCK_SEQPACKET: one message per request / answer
    _send(sock, {"ready": os.getpid()})
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 2)
        if not msg:
            return 0
        if len(fds) not in (1, 2):
            for f in fds:
                os.close(f)
            _send(sock, {"error": "a request carries its output descriptors"})
            continue
        out_fd, err_fd = fds[0], fds[-1]
        sys.stdout.flush()
        sys.stderr.flush()  # nothing of ours is written twice by a child
        child = os.fork()
        if child == 0:
            sock.close()
            _run_step(json.loads(msg), out_fd, err_fd)
        for f in set(fds):
            os.close(f)
        _send(sock, {"pid": child})
        _, status = os.waitpid(child, 0)
        rc = os.waitstatus_to_exitcode(status)  # < 0: killed by that signal
        kill_tree()  # what the step left behind (reparented to us): not left running
        _send(sock, {"rc": rc})


# -- the runner's end -------------------------------------------------------------------------------


def warm_argv(cmd: list[str]) -> list[str] | None:
    """The CLI arguments of a step the host can fork (this interpreter's `safekey …`), else None."""
    if not warm_enabled():
        return None
    if cmd[:3] == [sys.executable, "-m", CLI_MODULE]:
        return cmd[3:]
    return None


def warm_enabled() -> bool:
    """SAFEKEY_WARM_STEPS=0/1 decides; unset: Linux without a GPU device node (see the module's why)."""
    if not sys.platform.startswith("linux"):
        return False
    asked = os.environ.get("SAFEKEY_WARM_STEPS")
    if asked is not None:
        return asked != "0"
    return not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))


class WarmStep:
    """A forked step, seen like a `subprocess.Popen` (pid, stdout, stderr, poll, wait, send_signal, kill).

    `guarded` (the step runner's view): a signal goes to the host, which stops the step's whole tree
    and exits, as the guard does, and a death by signal N reads 128 + N, as the guard reports it.
    Otherwise (a test's view) a signal goes to the step itself and a death by signal N reads -N."""

    def __init__(self, host: WarmHost, pid: int, stdout=None, stderr=None, *, guarded: bool):
        self.host, self.pid, self.stdout, self.stderr, self.guarded = host, pid, stdout, stderr, guarded
        self.raw: int | None = None

    @property
    def returncode(self) -> int | None:
        if self.raw is None or not self.guarded:
            return self.raw
        return self.raw if self.raw >= 0 else 128 - self.raw

    def poll(self, timeout: float = 0.0) -> int | None:
        if self.raw is None:
            self.host._dispatch(timeout)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess
        import time

        deadline = None if timeout is None else time.time() + timeout
        while self.poll(0.5) is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired(["safekey"], timeout)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, timeout: float | None = None):
        """(stdout, stderr) read to their end (None where not a pipe), then the exit status, as Popen's."""
        import threading

        got: dict = {}
        readers = [threading.Thread(target=lambda k=k, f=f: got.__setitem__(k, f.read()), daemon=True)
                   for k, f in (("out", self.stdout), ("err", self.stderr)) if f is not None]
        for t in readers:
            t.start()
        self.wait(timeout)
        for t in readers:
            t.join()
        return got.get("out"), got.get("err")

    def send_signal(self, sig: int) -> None:
        if self.raw is not None:
            return
        try:
            os.kill(self.host.pid if self.guarded else self.pid, sig)
        except ProcessLookupError:
            return

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmHost:
    """The client's end of the host: started once (its imports take the ~6 s a step would), then one
    step at a time. `env` is the environment the host imported under."""

    def __init__(self, env: dict[str, str], log_path):
        import subprocess

        self.env = dict(env)
        self.sensitive = import_sensitive(self.env)
        self.log_path = log_path
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "safekey.stephost", str(os.getpid()), str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True)
        theirs.close()
        self.sock, self.dead, self.current = ours, False, None
        got = self._next(None)
        if "ready" not in got:
            self.close()
            raise OSError(f"the warm step host did not start (its log: {log_path})")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def busy(self) -> bool:
        if self.current is not None:
            self._dispatch(0.0)  # an abandoned step may have ended meanwhile
        return self.current is not None

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a step with this environment may be forked from here now (alive, idle, and the
        same variables read at import: see import_sensitive)."""
        return (not self.dead and self.proc.poll() is None and not self.busy
                and import_sensitive(env) == self.sensitive)

    def _next(self, timeout: float | None) -> dict:
        """The host's next message ({} when none came within `timeout`, None = wait). The host's end
        (EOF) reads as {"rc": its exit status}, so a waiting step never hangs."""
        import select

        if self.dead:
            return {"rc": self.proc.wait()}
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return {}
        msg = self.sock.recv(MAX_MESSAGE)
        if not msg:
            self.dead = True
            return {"rc": self.proc.wait()}
        return json.loads(msg)

    def _dispatch(self, timeout: float | None) -> None:
        """Read the running step's end, if it came."""
        if self.current is None:
            return
        got = self._next(timeout)
        if "rc" in got:
            self.current.raw = int(got["rc"])
            self.current = None

    def start(self, argv: list[str], cwd: str, env: dict[str, str] | None = None, *, session: bool = False,
              stdout: int = -1, stderr: int = -2, guarded: bool = True) -> WarmStep:
        """Fork `safekey ARGV`. stdout / stderr as subprocess takes them: a descriptor, PIPE (-1: read
        the returned step's `.stdout` / `.stderr`) or, for stderr, STDOUT (-2: into stdout)."""
        req = {"argv": argv, "cwd": cwd, "env": self.env if env is None else env, "session": session}
        mine: list[int] = []
        pipes: dict[str, int] = {}
        for name, fd in (("out", stdout), ("err", stderr)):
            if fd == -1:
                pipes[name], w = os.pipe()
                mine.append(w)
        out_w = mine[0] if "out" in pipes else stdout
        err_w = out_w if stderr == -2 else (mine[-1] if "err" in pipes else stderr)
        theirs = [out_w] if err_w == out_w else [out_w, err_w]
        try:
            socket.send_fds(self.sock, [json.dumps(req).encode()], theirs)
        finally:
            for w in mine:
                os.close(w)  # only the step holds the write ends now: its exit is the readers' EOF
        got = self._next(None)
        if "pid" not in got:
            for r in pipes.values():
                os.close(r)
            raise OSError(f"the warm step host did not start the step ({got})")
        step = WarmStep(self, int(got["pid"]), *(os.fdopen(pipes[k], "rb") if k in pipes else None for k in ("out", "err")),
                        guarded=guarded)
        self.current = step
        return step

    def close(self) -> None:
        """EOF ends the host (a step still running is stopped with it)."""
        self.sock.close()
        try:
            self.proc.wait(timeout=15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


_shared: WarmHost | None = None


def shared_host(env: dict[str, str], log_path) -> WarmHost | None:
    """This process's host, started at the first use (its output to `log_path`) and ended at exit:
    every runner and command of the process shares it. None where it cannot serve `env` now (the
    caller starts cold). Only the main thread starts one: the kernel's parent-death signal follows
    the thread that started the host, so a host started by a thread would die with that thread."""
    import atexit
    import threading

    global _shared
    if not warm_enabled():
        return None
    if _shared is None or _shared.dead or _shared.proc.poll() is not None:
        if threading.current_thread() is not threading.main_thread():
            return None
        _shared = WarmHost(env, log_path)  # OSError: it cannot start here
        atexit.register(_shared.close)
    return _shared if _shared.serves(env) else None


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
