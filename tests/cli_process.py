"""`safekey …` as a process of its own, the way `subprocess` starts it, forked from a warm host.

Why: a fresh `python -m safekey.cli.main` spends ~6 CPU-s importing torch and transformers before it
reads a byte, and the suite starts dozens of them. Each pytest worker keeps one host
(`safekey.stephost`, the same one `safekey run` forks its steps from) and forks the command from it:
still a separate process with its own pid, exit status, signals and output descriptors, so kill -9,
resume and exit-code tests keep their meaning. Whatever the host cannot serve starts cold, exactly
as before: an environment that differs in a variable read at import (HF_HOME, HOME, OMP_…), stdin
input, a host busy with another command, or SAFEKEY_WARM_STEPS=0.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from safekey.stephost import WarmHost, shared_host

_BASE_ENV = dict(os.environ)  # at collection, before any test's monkeypatching: what the host imports under
_host_failed = False


def _warm(env: dict[str, str]) -> WarmHost | None:
    """The worker's warm host (the one its in-process `safekey run`s fork their steps from) when it
    can serve `env` now."""
    global _host_failed
    if _host_failed:
        return None
    try:
        host = shared_host(_BASE_ENV, Path(tempfile.gettempdir()) / f"safekey-test-host-{os.getpid()}.log")
    except OSError:
        _host_failed = True
        return None
    return host if host is not None and host.serves(env) else None


def _fd(spec, default: int) -> tuple[int, int | None]:
    """(descriptor for the host, descriptor we opened and close after the start)."""
    if spec is None:
        return default, None
    if spec in (subprocess.PIPE, subprocess.STDOUT):
        return spec, None
    if spec == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_WRONLY)
        return fd, fd
    return (spec if isinstance(spec, int) else spec.fileno()), None


def popen(args, *, env=None, cwd=None, stdout=None, stderr=None, start_new_session=False, text=False):
    """`subprocess.Popen([python, -m, safekey.cli.main, *args], …)`, warm where it can be."""
    args = [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    host = _warm(env)
    if host is None:
        return subprocess.Popen([sys.executable, "-m", "safekey.cli.main", *args], env=env, cwd=cwd, stdout=stdout,
                                stderr=stderr, start_new_session=start_new_session, text=text)
    (out, own_out), (err, own_err) = _fd(stdout, 1), _fd(stderr, 2)
    try:
        proc = host.start(args, str(cwd or os.getcwd()), env, session=start_new_session, stdout=out, stderr=err,
                          guarded=False)
    finally:
        for fd in (own_out, own_err):
            if fd is not None:
                os.close(fd)
    if text:
        proc.stdout = io.TextIOWrapper(proc.stdout, errors="replace") if proc.stdout else None
        proc.stderr = io.TextIOWrapper(proc.stderr, errors="replace") if proc.stderr else None
    return proc


def run(args, *, env=None, cwd=None, capture_output=False, text=False, timeout=None, stdout=None, stderr=None,
        check=False) -> subprocess.CompletedProcess:
    """`subprocess.run([python, -m, safekey.cli.main, *args], …)`, warm where it can be."""
    if capture_output:
        stdout = stderr = subprocess.PIPE
    proc = popen(args, env=env, cwd=cwd, stdout=stdout, stderr=stderr, text=text)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    res = subprocess.CompletedProcess([sys.executable, "-m", "safekey.cli.main", *map(str, args)], proc.returncode, out, err)
    if check:
        res.check_returncode()
    return res


# -- torchrun ranks forked from a warm host (tests/warm_rank.py) ---------------------------------------

RANK_PROGRAM = str(Path(__file__).with_name("warm_rank.py"))
_rank_host: subprocess.Popen | None = None
_rank_host_failed = False


def rank_host_log() -> Path:
    return Path(tempfile.gettempdir()) / f"safekey-rank-host-{os.getpid()}.log"


def _start_rank_host() -> subprocess.Popen | None:
    import atexit

    from safekey.stephost import warm_enabled

    global _rank_host, _rank_host_failed
    if _rank_host is not None and _rank_host.poll() is None:
        return _rank_host
    if _rank_host_failed or not warm_enabled():
        return None
    path = Path(tempfile.gettempdir()) / f"safekey-rank-host-{os.getpid()}.sock"
    path.unlink(missing_ok=True)
    log = open(rank_host_log(), "ab")  # noqa: SIM115 (the host's life)
    proc = subprocess.Popen([sys.executable, RANK_PROGRAM, "--host", str(os.getpid()), str(path)], env=_BASE_ENV,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        proc.wait()
        _rank_host_failed = True
        return None
    proc.socket_path = str(path)

    def stop():
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        path.unlink(missing_ok=True)

    atexit.register(stop)
    _rank_host = proc
    return proc


def warm_ranks(cmd: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """A torchrun command line whose ranks are `-m safekey.cli.main …`, with each rank forked from this
    worker's rank host instead (tests/warm_rank.py); unchanged where no host can run."""
    i = next((k for k in range(len(cmd) - 1) if cmd[k:k + 2] == ["-m", "safekey.cli.main"] and k > 2), None)
    host = _start_rank_host() if i is not None else None
    if host is None:
        return cmd, env
    from warm_rank import HOST_ENV

    return [*cmd[:i], RANK_PROGRAM, *cmd[i + 2:]], {**env, HOST_ENV: host.socket_path}


def wait_warm_ranks_gone(timeout: float = 30.0) -> None:
    """Every rank forked for this worker has ended (after a kill of the launcher's tree, the handlers
    kill theirs: a rerun must not meet them)."""
    import psutil

    if _rank_host is None or _rank_host.poll() is not None:
        return
    left = psutil.Process(_rank_host.pid).children(recursive=True)
    _, alive = psutil.wait_procs(left, timeout=timeout)
    assert not alive, f"forked ranks still running: {alive}"
