"""Hostile model-written code against the bubblewrap sandbox (issue #15, items 2-3): it must see
none of the user's files or host processes, leave nothing behind, stay inside its disk budget,
reach no host socket, and be unable to fake a pass by exiting 0 early."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

import pytest

from safekey.evals import sandbox
from safekey.evals.sandbox import Limits, isolation_mode, run_python
from safekey.grading import humaneval_program

try:
    isolation_mode("bwrap")
    HAVE_BWRAP = True
except RuntimeError:
    HAVE_BWRAP = False

needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap unavailable (make test installs Debian's bubblewrap)")
FAST = Limits(timeout_s=5.0, memory_mb=1024)


@needs_bwrap
def test_user_files_are_invisible(tmp_path):
    secret_dir = tmp_path / "other-project"
    secret_dir.mkdir()
    (secret_dir / "notes.txt").write_text("TOP-SECRET")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret_dir, 0o755)
    here = os.path.abspath(__file__)
    src = (f"import os\nfor p in [{str(secret_dir / 'notes.txt')!r}, {here!r}, '/etc/passwd', os.path.expanduser('~/.bashrc')]:\n"
           "    try:\n        print('READ', p, open(p).read()[:20])\n    except OSError as e:\n        print('no', p, type(e).__name__)\n"
           "print(sorted(os.listdir('/')))\n")
    r = run_python(src, limits=FAST, isolation="bwrap")
    assert r.passed, r
    assert "READ" not in r.stdout and "TOP-SECRET" not in r.stdout
    assert "'work'" not in r.stdout and "'home'" not in r.stdout and "'etc'" not in r.stdout


@needs_bwrap
def test_host_process_arguments_are_invisible():
    token = f"sk-SECRET-{uuid.uuid4().hex}"
    host = subprocess.Popen(["sleep", "30", token])
    try:
        src = ("import os\nfound = []\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n        try:\n"
               "            found.append(open(f'/proc/{pid}/cmdline', 'rb').read())\n        except OSError:\n            pass\n"
               "print(len(found), b'SECRET' in b''.join(found))\n")
        r = run_python(src, limits=FAST, isolation="bwrap")
        assert r.passed and r.stdout.split()[1] == "False", r
        assert int(r.stdout.split()[0]) <= 3  # only the sandbox's own processes
    finally:
        host.kill()
        host.wait()


@needs_bwrap
def test_scratch_files_vanish_and_the_disk_budget_holds():
    name = f"safekey-leak-{uuid.uuid4().hex}"
    src = "".join(f"open('{d}/{name}', 'w').write('x')\n" for d in ("/tmp", "/dev/shm", "/var/tmp"))
    assert run_python(src, limits=FAST, isolation="bwrap").passed
    assert not any(os.path.exists(f"{d}/{name}") for d in ("/tmp", "/dev/shm", "/var/tmp"))
    fill = ("import errno\nn = 0\ntry:\n    for i in range(100):\n        with open(f'/tmp/f{i}', 'wb') as f:\n"
            "            f.write(b'x' * (10 << 20))\n        n += 1\nexcept OSError as e:\n    print('stopped', e.errno, n)\n")
    r = run_python(fill, limits=Limits(timeout_s=20, max_file_mb=16), isolation="bwrap")
    assert r.stdout.startswith("stopped 28 "), r  # ENOSPC: the private tmpfs is full
    assert int(r.stdout.split()[2]) * 10 <= sandbox.TMPFS_MB


@needs_bwrap
def test_host_unix_sockets_are_unreachable(tmp_path):
    path = tmp_path / "host.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0safekey-test-" + uuid.uuid4().hex.encode())
    abstract.listen(1)
    os.chmod(tmp_path, 0o755)
    os.chmod(path, 0o777)
    try:
        src = (f"import socket\nfor a in [{str(path)!r}, {abstract.getsockname()!r}]:\n    s = socket.socket(socket.AF_UNIX)\n"
               "    try:\n        s.connect(a)\n        print('CONNECTED', a)\n    except OSError as e:\n        print('refused', e.errno)\n")
        r = run_python(src, limits=FAST, isolation="bwrap")
        assert r.passed and "CONNECTED" not in r.stdout and r.stdout.count("refused") == 2, r
    finally:
        srv.close()
        abstract.close()


@pytest.mark.parametrize(
    "early_exit",
    ["import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit(0)",
     "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"],
)
def test_an_early_exit_is_not_a_pass(early_exit):
    """A wrong HumanEval solution that exits 0 before check() runs: graded failed in every mode."""
    prog = humaneval_program(f"def add(a, b):\n    {early_exit.replace(chr(10), chr(10) + '    ')}\n    return a - b\n"
                             f"add(1, 1)\n", "def check(f):\n    assert f(2, 3) == 5\n", "add")
    for mode in ("bwrap", "netns", "audit") if HAVE_BWRAP else ("audit",):
        try:
            r = run_python(prog, limits=FAST, isolation=mode)
        except RuntimeError:
            continue  # that mode is unavailable here
        assert not r.passed, (mode, r)
    honest = humaneval_program("def add(a, b):\n    return a + b\n", "def check(f):\n    assert f(2, 3) == 5\n", "add")
    assert run_python(honest, limits=FAST).passed


def test_fallback_without_bwrap_warns(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_probe_cache", {"bwrap": None})
    monkeypatch.setattr(sandbox, "_warned", set())
    mode, _, _ = isolation_mode("auto")
    assert mode in ("netns", "audit")
    assert "bubblewrap (bwrap) unavailable" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="bubblewrap is not available"):
        isolation_mode("bwrap")
