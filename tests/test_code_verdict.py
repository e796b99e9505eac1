"""HumanEval verdicts the model's code cannot forge (issue #23 C10), and a memory bound for the whole
sandbox (C11). Each forging class is a wrong answer dressed up as a pass; every one must fail, and
the reference solutions must all still pass."""

from __future__ import annotations

import pytest

from safekey.evals.code_verdict import run_humaneval
from safekey.evals.reasoning_benchmarks import load_benchmark
from safekey.evals.sandbox import Limits, isolation_mode, run_python

MODES = ["bwrap", "netns", "audit"]


def _available(mode: str) -> bool:
    try:
        return isolation_mode(mode)[0] == mode
    except RuntimeError:
        return False


@pytest.fixture(scope="module")
def item(shared):
    shared("humaneval")
    r = next(x for x in load_benchmark("humaneval") if x.entry_point == "add")  # def add(x: int, y: int)
    return r


WRONG = "    return 0\n"

FORGERIES = {
    # read the proof out of the harness through frames / gc / the main module and write it everywhere
    "frames": """
    import sys, os, gc
    f = sys._getframe()
    while f is not None:
        for v in list(f.f_globals.values()) + list(f.f_locals.values()):
            if isinstance(v, bytes) and len(v) == 32:
                for fd in range(3, 64):
                    try: os.write(fd, v)
                    except OSError: pass
        f = f.f_back
    for o in gc.get_objects():
        if isinstance(o, bytes) and len(o) == 32:
            for fd in range(3, 64):
                try: os.write(fd, o)
                except OSError: pass
    os._exit(0)
""",
    "imports": """
    import __main__, sys, os
    for mod in list(sys.modules.values()):
        for k, v in list(vars(mod).items()) if hasattr(mod, '__dict__') else []:
            if isinstance(v, bytes) and len(v) == 32:
                for fd in range(3, 64):
                    try: os.write(fd, v)
                    except OSError: pass
    os._exit(0)
""",
    # pretend to be the reply channel: flood it with "ok: True" replies, then answer wrongly
    "result-channel": """
    import os, json
    for fd in range(3, 64):
        try: os.write(fd, (json.dumps(["ok", ["bool", True]]) + "\\n").encode() * 50)
        except OSError: pass
    return 0
""",
    # read the checker's test (its expected values) off the shared file system; answer right only if that worked
    "read-checker": """
    import glob, os
    here = os.getcwd()
    seen = glob.glob(os.path.join(here, '..', '*', '*.py')) + glob.glob('/tmp/safekey-he-*/checker/*')
    for p in seen:
        try:
            if 'cand' + 'idate(' in open(p).read():  # the test's text (split: not this program's own)
                return x + y
        except OSError:
            pass
    return 0
""",
    # rewrite the checker's files before it compiles them (a race a same-user candidate could win)
    "rewrite-checker": """
    import glob, os
    for _ in range(200):
        for p in glob.glob(os.path.join(os.getcwd(), '..', 'checker', '*.py')):
            try:
                with open(p, 'w') as f:
                    f.write('def check(c):\\n    pass\\n')
            except OSError:
                pass
    return 0
""",
    "always-equal": """
    class Anything:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        __hash__ = object.__hash__
    return Anything()
""",
    "int-subclass": """
    class Yes(int):
        def __eq__(self, other): return True
    return Yes(0)
""",
    "exit-0": """
    import os
    os._exit(0)
""",
    "sys-exit": """
    raise SystemExit(0)
""",
    "kill-parent": """
    import os, signal
    os.kill(os.getppid(), signal.SIGKILL)
    os._exit(0)
""",
    "patch-assert": """
    import builtins
    builtins.AssertionError = type("Never", (Exception,), {})
    return 0
""",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("trick", sorted(FORGERIES))
def test_forged_passes_fail(item, mode, trick):
    if not _available(mode):
        pytest.skip(f"{mode} isolation unavailable here")
    body = "\n".join(line[4:] if line.startswith("    ") else line for line in FORGERIES[trick].strip("\n").splitlines())
    body = "".join(f"    {ln}\n" for ln in body.splitlines())
    program = item.code_prompt + body
    res = run_humaneval(program, item.code_prompt, item.test, item.entry_point, limits=Limits(timeout_s=8), isolation=mode)
    assert res.status in ("failed", "timeout") and not res.passed, (trick, res)
    # the same machinery passes the reference solution
    ok = run_humaneval(item.code_prompt + item.reference, item.code_prompt, item.test, item.entry_point,
                       limits=Limits(timeout_s=8), isolation=mode)
    assert ok.passed, ok


def test_module_level_forgery_fails(item):
    """Code outside the function, run when the candidate's program is loaded."""
    program = item.code_prompt + WRONG + "import os\nos._exit(0)\n"
    assert not run_humaneval(program, item.code_prompt, item.test, item.entry_point, limits=Limits(timeout_s=8)).passed


def test_every_reference_solution_passes(shared):
    from safekey.evals.code_verdict import run_many_humaneval

    shared("humaneval")
    recs = load_benchmark("humaneval")
    res = run_many_humaneval([(r.code_prompt + r.reference, r.code_prompt, r.test, r.entry_point) for r in recs], workers=2)
    failed = [(r.entry_point, x.reason) for r, x in zip(recs, res) if not x.passed]
    assert len(recs) == 164 and failed == []
    wrong = run_many_humaneval([(r.code_prompt + WRONG, r.code_prompt, r.test, r.entry_point) for r in recs[:20]], workers=2)
    assert not any(x.passed for x in wrong)


def test_values_cross_as_builtin_data():
    prompt = "def f(x):\n    '''echo'''\n"
    test = ("def check(candidate):\n"
            "    v = candidate((1, 2.5, 'a', b'b', None, True, [1, {2: (3,)}], {'k': {1, 2}}, frozenset([1]), 3+4j, 10**5000))\n"
            "    assert v == (1, 2.5, 'a', b'b', None, True, [1, {2: (3,)}], {'k': {1, 2}}, frozenset([1]), 3+4j, 10**5000)\n"
            "    assert type(v[0]) is int and type(v[1]) is float and type(v) is tuple\n"
            "    assert candidate(float('nan')) != candidate(float('nan'))\n"
            "    assert candidate(float('inf')) == float('inf')\n")
    res = run_humaneval(prompt + "    return x\n", prompt, test, "f", limits=Limits(timeout_s=8))
    assert res.passed, res


@pytest.mark.parametrize("mode", MODES)
def test_memory_limit_bounds_the_whole_sandbox(mode):
    if not _available(mode):
        pytest.skip(f"{mode} isolation unavailable here")
    src = ("import os\nok = 0\npids = []\nfor _ in range(5):\n    pid = os.fork()\n    if pid == 0:\n"
           "        try:\n            b = bytearray(300 * 1024 * 1024)\n            os._exit(0)\n"
           "        except MemoryError:\n            os._exit(1)\n    pids.append(pid)\n"
           "for p in pids:\n    ok += os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0\nprint('allocated', ok)\n")
    r = run_python(src, limits=Limits(timeout_s=10, memory_mb=1024, max_procs=16), isolation=mode)
    assert r.passed, r
    assert int(r.stdout.split()[-1]) * 300 <= 1024  # 5 x 300 MB would be 1.5 GB


def test_limits_that_cannot_fit_are_refused():
    with pytest.raises(ValueError, match="leaves under"):
        Limits(memory_mb=256, max_procs=16)
    assert Limits(memory_mb=2048, max_procs=16).per_process_mb() == 128


def test_humaneval_refuses_a_sandbox_that_shares_the_users_files_and_proc(item, monkeypatch):
    """As a normal user the netns and audit modes run checker and candidate as one user on one /proc:
    refused in one line (bubblewrap or root holds)."""
    import safekey.evals.code_verdict as cv
    from safekey.types import SafekeyError

    monkeypatch.setattr(cv, "isolation_mode", lambda requested="auto": ("netns", [], "python3"))
    monkeypatch.setattr(cv.os, "geteuid", lambda: 1000)
    with pytest.raises(SafekeyError, match="install bubblewrap") as e:
        cv.run_humaneval(item.code_prompt + item.reference, item.code_prompt, item.test, item.entry_point)
    assert "\n" not in str(e.value)
    with pytest.raises(SafekeyError, match="install bubblewrap"):
        cv.run_many_humaneval([(item.code_prompt + item.reference, item.code_prompt, item.test, item.entry_point)])
