"""Run one command so that its whole process tree dies with the process that started it.

Why: `safekey run` starts each step as a subprocess (a training under torchrun is three levels
deep: launcher → ranks, each rank in a session of its own). Killing the runner — Ctrl-C, `kill`,
`kill -9`, or its whole process group — used to leave the training running, writing into the log
the rerun then truncated. A signal handler in the runner cannot help against SIGKILL, so the
guard lives between the runner and the step:

* it is started in a session of its own (a kill of the runner's process group does not reach it)
  and asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), checking right after
  that the parent is still the one that started it (the race the man page warns about);
* it is a child subreaper (``PR_SET_CHILD_SUBREAPER``): descendants that leave their parent or
  their session (torchrun's ranks do both) are reparented to the guard, so walking its children
  finds every one of them;
* on SIGTERM / SIGINT / SIGHUP, and after the step's own exit, every remaining descendant gets
  SIGTERM, then SIGKILL after a grace period. The guard exits with the step's status.

Usage: ``python -m safekey.stepguard PARENT_PID -- CMD …`` (Linux; elsewhere it just runs CMD).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0  # SIGTERM → SIGKILL: time for a launcher to stop its ranks and for a rank to exit


def _prctl(option: int, arg: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Ask the kernel for `sig` when this process's parent ends (Linux). False: `parent` (default: the
    parent now) had already ended when the request took effect (the race the man page warns about)."""
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        _prctl(PR_SET_PDEATHSIG, sig)
    return os.getppid() == parent


def kill_tree(grace_s: float = GRACE_S) -> int:
    """SIGTERM every descendant of this process, SIGKILL those alive after `grace_s`; how many."""
    import psutil

    me = psutil.Process()
    procs = me.children(recursive=True)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            continue  # already gone
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    # a launcher may have started more while it was stopping: sweep once more
    alive += [p for p in me.children(recursive=True) if p not in alive]
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def arm(parent: int) -> bool:
    """Become a guard of `parent`'s work: subreaper, SIGTERM when `parent` dies, and on SIGTERM /
    SIGINT / SIGHUP every descendant stopped before exiting. False: `parent` is already gone."""
    if sys.platform.startswith("linux"):
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if not die_with_parent(signal.SIGTERM, parent):  # the runner died before PDEATHSIG was armed
        return False
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            kill_tree()
            os._exit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop)
    return True


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m safekey.stepguard PARENT_PID -- CMD …", file=sys.stderr)
        return 2
    parent, cmd = int(argv[0]), argv[2:]
    linux = sys.platform.startswith("linux")
    if not arm(parent):
        return 143
    rc = subprocess.Popen(cmd).wait()
    if linux:
        kill_tree()  # descendants that outlived the step (reparented to us): not left behind
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
