"""The HumanEval sandbox: canonical solutions pass; hostile programs are contained and reported."""

from __future__ import annotations

import os
import socket
import threading
import time

import psutil
import pytest

from safekey.evals.reasoning_benchmarks import load_benchmark
from safekey.evals.sandbox import Limits, isolation_mode, run_many, run_python
from safekey.grading import extract_code, humaneval_program

FAST = Limits(timeout_s=3.0, memory_mb=1024, max_procs=16)


def _modes() -> list[str]:
    modes = ["audit"]
    for m in ("netns", "bwrap"):
        try:
            isolation_mode(m)
            modes.insert(0, m)
        except RuntimeError:
            pass  # unavailable here: the weaker modes are still tested
    return modes


MODES = _modes()


def _leftovers(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in (p.info.get("cmdline") or [])):
            out.append(p)
    return out


def test_isolation_mode_is_reported():
    mode, _, py = isolation_mode()
    assert mode in ("bwrap", "netns", "audit") and os.path.exists(py)
    r = run_python("print('hello')")
    assert r.passed and r.stdout.strip() == "hello" and r.isolation == mode


def test_humaneval_canonical_solutions_all_pass(shared):
    shared("humaneval/HumanEval.jsonl.gz")
    items = load_benchmark("humaneval")
    assert len(items) == 164
    programs = []
    for r in items:
        ex = extract_code(r.reference, r.code_prompt, r.entry_point)  # the raw continuation of the prompt
        assert ex.method == "code_continuation", r.id
        programs.append(humaneval_program(ex.answer, r.test, r.entry_point))
    t0 = time.monotonic()
    results = run_many(programs, limits=Limits(timeout_s=20), workers=2)
    failed = [(r.id, res.status, res.reason) for r, res in zip(items, results) if not res.passed]
    assert failed == [], failed
    assert time.monotonic() - t0 < 150


def test_wrong_solution_fails_with_the_assertion(shared):
    r = load_benchmark("humaneval", limit=1)[0]
    wrong = extract_code("    return True\n", r.code_prompt, r.entry_point).answer
    res = run_python(humaneval_program(wrong, r.test, r.entry_point), limits=FAST)
    assert res.status == "failed" and res.reason.startswith("AssertionError")


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_is_killed(mode):
    t0 = time.monotonic()
    r = run_python("while True:\n    pass\n", limits=Limits(timeout_s=2), isolation=mode)
    assert r.status == "timeout" and "timeout" in r.reason
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("mode", MODES)
def test_sleeping_loop_is_killed_by_wall_clock(mode):
    r = run_python("import time\nwhile True:\n    time.sleep(1)\n", limits=Limits(timeout_s=1.5), isolation=mode)
    assert r.status == "timeout" and "process group killed" in r.reason


@pytest.mark.parametrize("mode", MODES)
def test_10gb_allocation_is_refused(mode):
    r = run_python("x = bytearray(10 * 1024 ** 3)\nprint('allocated')\n", limits=FAST, isolation=mode)
    assert r.status == "failed" and r.reason.startswith("MemoryError") and "allocated" not in r.stdout


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb_is_contained(mode):
    marker = f"forkbomb_{mode}_{os.getpid()}"
    src = (
        f"# {marker}\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    t0 = time.monotonic()
    r = run_python(src, limits=Limits(timeout_s=2, max_procs=16), isolation=mode)
    assert r.status == "timeout"
    assert time.monotonic() - t0 < 15
    time.sleep(0.5)
    assert _leftovers(marker) == []  # the whole tree is gone


@pytest.mark.parametrize("mode", MODES)
def test_fork_limit_is_enforced(mode):
    src = (
        "import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
        "            time.sleep(2)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
        "    print('fork refused after', n)\n    raise\n"
    )
    r = run_python(src, limits=Limits(timeout_s=5, max_procs=10), isolation=mode)
    assert r.status == "failed" and "BlockingIOError" in r.reason
    n = int(r.stdout.split()[-1])
    assert n < 10


@pytest.mark.parametrize("mode", MODES)
def test_child_that_leaves_the_process_group_is_killed(mode):
    marker = f"setsid_{mode}_{os.getpid()}"
    src = f"# {marker}\nimport os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    r = run_python(src, limits=FAST, isolation=mode)
    assert r.passed
    time.sleep(0.5)
    assert _leftovers(marker) == []


@pytest.fixture()
def listener():
    """A TCP server on the host's loopback that records every connection it gets."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    got: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            got.append("connected")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    stop.set()
    t.join(2)
    srv.close()


def test_listener_fixture_sees_unsandboxed_connections(listener):
    port, got = listener
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    time.sleep(0.5)
    assert got == ["connected"]  # so an empty list below really means "blocked"


@pytest.mark.parametrize("mode", MODES)
def test_network_is_blocked(mode, listener):
    port, got = listener
    src = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n"
    r = run_python(src, limits=FAST, isolation=mode)
    time.sleep(0.5)
    assert r.status == "failed" and "connected" not in r.stdout and got == []
    if mode in ("netns", "bwrap"):
        assert "Network is unreachable" in r.reason or "Connection refused" in r.reason
    else:
        assert r.reason.startswith("PermissionError: sandbox: socket.")


@pytest.mark.parametrize("mode", MODES)
def test_output_flood_is_capped(mode):
    r = run_python("while True:\n    print('x' * 10000)\n", limits=Limits(timeout_s=5, max_file_mb=1), isolation=mode)
    assert r.status == "failed" and len(r.stdout) <= 4000


def test_audit_mode_blocks_process_spawning():
    r = run_python("import subprocess\nsubprocess.run(['true'])\n", limits=FAST, isolation="audit")
    assert r.status == "failed" and "subprocess.Popen is blocked" in r.reason


def test_run_continues_after_hostile_programs(shared):
    r = load_benchmark("humaneval", limit=1)[0]
    good = humaneval_program(r.code_prompt + r.reference, r.test, r.entry_point)
    hostile = ["while True: pass", "x = bytearray(10 * 1024 ** 3)", "import os\nwhile True: os.fork()"]
    res = run_many(hostile + [good], limits=Limits(timeout_s=2), workers=2)
    assert res[0].status == "timeout" and res[1].reason.startswith("MemoryError")
    assert res[2].status in ("failed", "timeout") and not res[2].passed  # BlockingIOError or killed
    assert res[3].passed
