"""torchrun ranks forked from a warm host, for the multi-rank tests.

Why: each torchrun rank is a fresh interpreter that spends ~6 CPU-s importing torch and
transformers' Trainer before its first step; the suite launches ~20 two-rank trainings. The launch
stays torchrun's (its rendezvous, its environment per rank, its sessions, its exit codes): only the
program it starts per rank is this relay, which asks the pytest worker's rank host for a fork that
runs `safekey` with the rank's arguments, descriptors and environment, forwards signals to it, and
exits with its status. The rank itself is a process of its own, as before:

    torchrun ── relay (rank r) ┄┄ socket ┄┄ handler ── rank r (`safekey.cli.main.main(argv)`)
                                           (a fork of the rank host, which imported once)

* the relay dies (kill -9 of the launcher's tree) → its handler sees the socket close and kills
  the rank's process group; the handler dies → the rank gets SIGKILL (PR_SET_PDEATHSIG);
* a rank whose environment differs from the host's in a variable read at import
  (`safekey.stephost.import_sensitive`, less the variables torchrun sets per rank), or no host:
  the relay execs the cold `python -m safekey.cli.main …` in its own place (same pid).

The plain `torchrun -m safekey.cli.main` path stays in the suite: the DDP fixture, the DDP kill
test (launcher-only kill: the ranks must end with their launcher) and every `safekey run` launch.

Relay:  torchrun … tests/warm_rank.py ARGV…   (SAFEKEY_TEST_RANK_HOST=socket path)
Host:   python tests/warm_rank.py --host PARENT_PID SOCKET_PATH
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

HOST_ENV = "SAFEKEY_TEST_RANK_HOST"
MAX_MESSAGE = 1 << 20
_PER_RANK_PREFIXES = ("TORCHELASTIC_", "TORCH_NCCL_ASYNC_ERROR_HANDLING", HOST_ENV)


def _send(sock: socket.socket, obj: dict) -> None:
    sock.sendall(json.dumps(obj).encode())


def _cold(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-u", "-m", "safekey.cli.main", *argv])  # as torchrun starts a rank


# -- the relay: what torchrun starts per rank ------------------------------------------------------


def relay(argv: list[str]) -> int:
    path = os.environ.get(HOST_ENV)
    if not path:
        _cold(argv)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
        socket.send_fds(sock, [json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                                           "session": True}).encode()], [1, 2])
        got = json.loads(sock.recv(MAX_MESSAGE) or b"{}")
    except OSError:
        got = {}
    if "pid" not in got:  # no host, or one that cannot serve this environment: the cold start
        sock.close()
        _cold(argv)

    def forward(signum, _frame):
        with contextlib.suppress(OSError):  # the handler is gone: its rank with it
            _send(sock, {"signal": signum})

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, forward)
    while True:
        msg = sock.recv(MAX_MESSAGE)  # a forwarded signal interrupts it; Python retries (PEP 475)
        if not msg:
            print("warm_rank: the rank's handler ended without a status", file=sys.stderr)
            return 1
        rc = json.loads(msg).get("rc")
        if rc is None:
            continue
        if rc < 0:  # killed by a signal: end the same way, so torchrun reads what it would have
            signal.signal(-rc, signal.SIG_DFL)
            os.kill(os.getpid(), -rc)
        return rc


# -- the host and its per-rank handlers --------------------------------------------------------------


def _comparable(env: dict[str, str]) -> dict[str, str]:
    from safekey.stephost import import_sensitive

    return {k: v for k, v in import_sensitive(env).items() if not k.startswith(_PER_RANK_PREFIXES)}


def _handle(conn: socket.socket, mine: dict[str, str]) -> None:
    """In a fork of the host, for one rank: start it, relay signals, report its end; never returns."""
    import select

    from safekey.stepguard import die_with_parent
    from safekey.stephost import _run_step

    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    msg, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE, 2)
    req = json.loads(msg)
    if len(fds) != 2 or _comparable(req["env"]) != mine:
        _send(conn, {"cold": "environment"})
        os._exit(0)
    rank = os.fork()
    if rank == 0:
        conn.close()
        die_with_parent(signal.SIGKILL)
        _run_step(req, fds[0], fds[1])
    for fd in fds:
        os.close(fd)
    print(f"forked rank {rank}: safekey {' '.join(req['argv'][:2])}", file=sys.stderr, flush=True)
    _send(conn, {"pid": rank})
    rc = None
    while rc is None:
        ready, _, _ = select.select([conn], [], [], 0.05)
        if ready:
            got = conn.recv(MAX_MESSAGE)
            if not got:  # the relay died (torchrun's tree killed): so does its rank
                _kill_group(rank)
                os.waitpid(rank, 0)
                os._exit(0)
            sig = json.loads(got).get("signal")
            if sig:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rank, sig)
        pid, status = os.waitpid(rank, os.WNOHANG)
        if pid:
            rc = os.waitstatus_to_exitcode(status)
    _kill_group(rank)  # what the rank started and left behind
    with contextlib.suppress(OSError):  # the relay is gone: nobody to tell
        _send(conn, {"rc": rc})
    os._exit(0)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def serve(parent: int, path: str) -> int:
    import importlib
    import select

    from safekey.stepguard import arm
    from safekey.stephost import PRELOAD

    if not arm(parent):
        return 143
    sys.path[0] = os.getcwd()  # what a rank's `python -m` puts first, not this script's folder
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    mine = _comparable(dict(os.environ))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([listener], [], [], 0.1)
        if ready:
            conn, _ = listener.accept()
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                _handle(conn, mine)
            conn.close()
        while True:  # reap ended handlers (and what the subreaper inherited)
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break


if __name__ == "__main__":
    if sys.argv[1:2] == ["--host"]:
        sys.exit(serve(int(sys.argv[2]), sys.argv[3]))
    sys.exit(relay(sys.argv[1:]))
