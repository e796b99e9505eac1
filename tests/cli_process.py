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
