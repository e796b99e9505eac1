"""The step runner's promises (issue #23 A): a step is done only for the inputs it ran on (a changed
input reruns it and every step after it), an interrupted step continues, killing the runner — by
pid or by process group, with SIGKILL — leaves no process of its step behind, one runner per folder,
and no credentials in steps.json or the step logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from filelock import FileLock

from safekey.cli.main import main
from safekey.steps import Step, StepRunner
from safekey.types import SafekeyError


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _chain(tmp: Path) -> tuple[list[Step], Path, Path, Path]:
    """one: src → mid (records its extra argv); two: mid → end (counts its runs)."""
    src, mid, end, runs = tmp / "src.txt", tmp / "mid.txt", tmp / "end.txt", tmp / "runs.txt"
    one = Step("one", _py(f"import sys; open({str(mid)!r}, 'w').write(open({str(src)!r}).read() + '|' + ' '.join(sys.argv[1:]))"),
               [mid], 1, inputs=[src], fresh_args=["FRESH"], resume_args=["RESUME"])
    two = Step("two", _py(f"import sys; open({str(end)!r}, 'w').write(open({str(mid)!r}).read()); "
                          f"open({str(runs)!r}, 'a').write(' '.join(sys.argv[1:]) + ';')"),
               [end], 1, inputs=[mid], after=["one"], fresh_args=["FRESH"])
    return [one, two], src, end, runs


def test_changed_input_reruns_the_step_and_everything_after(tmp_path):
    steps, src, end, runs = _chain(tmp_path)
    src.write_text("a")
    StepRunner(tmp_path / "out", echo=lambda _: None).run(steps)
    assert end.read_text() == "a|RESUME" and runs.read_text() == ";"
    log: list[str] = []
    StepRunner(tmp_path / "out", echo=log.append).run(steps)
    assert runs.read_text() == ";" and any("2 of 2 steps already done" in x for x in log)
    src.write_text("b")  # edited in place: same command line, other content
    log = []
    StepRunner(tmp_path / "out", echo=log.append).run(steps)
    assert end.read_text() == "b|FRESH"  # redone from scratch, and the step after it too
    assert runs.read_text() == ";FRESH;"
    assert sum("its inputs changed" in x for x in log) == 2


def test_changed_command_or_environment_reruns(tmp_path, monkeypatch):
    steps, src, _, runs = _chain(tmp_path)
    src.write_text("a")
    StepRunner(tmp_path / "out", echo=lambda _: None).run(steps)
    monkeypatch.setenv("SAFEKEY_DATA_DIR", str(tmp_path))  # changes what a stage would read
    StepRunner(tmp_path / "out", echo=lambda _: None).run(steps)
    assert runs.read_text() == ";FRESH;"


def test_interrupted_step_is_continued_with_resume_args(tmp_path):
    flag = tmp_path / "ok"
    seen = tmp_path / "argv.txt"
    step = Step("s", _py(f"import os, sys; open({str(seen)!r}, 'a').write(' '.join(sys.argv[1:]) + ';'); "
                         f"sys.exit(0 if os.path.exists({str(flag)!r}) else 3)"), [], 1,
                resume_args=["--auto-resume"], fresh_args=["--overwrite"])
    with pytest.raises(SafekeyError, match=r"step s failed \(exit 3\)"):
        StepRunner(tmp_path / "out", echo=lambda _: None).run([step])
    assert json.loads((tmp_path / "out" / "steps.json").read_text())["s"]["status"] == "running"
    flag.write_text("")
    StepRunner(tmp_path / "out", echo=lambda _: None).run([step])
    assert seen.read_text() == "--auto-resume;--auto-resume;"  # same inputs: continued, never started over


@pytest.mark.parametrize("content, why", [("", "unreadable"), ("{not json", "unreadable"), ("[1, 2]", "not a steps file"),
                                          ('{"a": 3}', "not a steps file")])
def test_bad_steps_file_is_one_line(tmp_path, capsys, content, why):
    out = tmp_path / "out"
    out.mkdir()
    (out / "steps.json").write_text(content)
    with pytest.raises(SafekeyError, match=why):
        StepRunner(out)
    spec = tmp_path / "e.yaml"
    spec.write_text("name: t\ntrain_data: '{starter}/train.jsonl'\nvariants: [{name: s, mode: sft}]\nmodel: /nonexistent\n")
    with pytest.raises(SystemExit) as e:
        main(["run", str(spec), "-o", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_steps_file_is_written_atomically(tmp_path):
    steps, src, _, _ = _chain(tmp_path)
    src.write_text("a")
    StepRunner(tmp_path / "out", echo=lambda _: None).run(steps)
    assert not list((tmp_path / "out").glob("steps.json*.tmp"))
    assert set(json.loads((tmp_path / "out" / "steps.json").read_text())) == {"one", "two"}


def test_second_runner_on_the_same_folder_is_refused(tmp_path):
    steps, src, _, runs = _chain(tmp_path)
    src.write_text("a")
    (tmp_path / "out").mkdir()
    with FileLock(str(tmp_path / "out" / ".runner.lock")), pytest.raises(SafekeyError, match="being run by another process"):
        StepRunner(tmp_path / "out", echo=lambda _: None).run(steps)
    assert not runs.exists()


def test_runner_refuses_while_a_killed_runs_step_is_alive(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    live = subprocess.Popen(["sleep", "30"])
    try:
        (out / "running.json").write_text(json.dumps({"step": "train-sft", "guard_pid": live.pid,
                                                      "guard_created": psutil.Process(live.pid).create_time()}))
        with pytest.raises(SafekeyError, match=rf"step train-sft of an earlier run is still running \(pid {live.pid}\)"):
            StepRunner(out, echo=lambda _: None).run([])
    finally:
        live.kill()
        live.wait()
    StepRunner(out, echo=lambda _: None).run([])  # gone (or a recycled pid): no refusal


# a runner whose step starts a grandchild in a session of its own (as torchrun starts its ranks)
RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from safekey.steps import Step, StepRunner
    out, pids = Path(sys.argv[1]), sys.argv[2]
    step_code = (
        "import os, subprocess, sys, time\\n"
        "g = subprocess.Popen(['sleep', '300'], start_new_session=True)\\n"
        f"open({pids!r}, 'w').write(f'{{os.getpid()}} {{g.pid}}')\\n"
        "time.sleep(300)\\n")
    StepRunner(out, echo=print).run([Step("long", [sys.executable, "-c", step_code], [], 1)])
""")


@pytest.mark.parametrize("how", ["kill -9 the runner", "kill -9 its process group"])
def test_killing_the_runner_leaves_no_orphans(tmp_path, how):
    pids = tmp_path / "pids.txt"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    runner = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out"), str(pids)], start_new_session=True)
    deadline = time.time() + 60
    while not pids.exists() or len(pids.read_text().split()) < 2:
        assert time.time() < deadline and runner.poll() is None, "the step never started"
        time.sleep(0.2)
    step_pid, grandchild = map(int, pids.read_text().split())
    running = tmp_path / "out" / "running.json"
    while not running.exists():  # the runner records the step's pids once it sees the step (a loaded machine: later)
        assert time.time() < deadline and runner.poll() is None, "the runner never recorded its step"
        time.sleep(0.1)
    rec = json.loads(running.read_text())
    assert rec["step"] == "long" and rec["step_pid"] == step_pid
    if how == "kill -9 the runner":
        os.kill(runner.pid, signal.SIGKILL)
    else:
        os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    deadline = time.time() + 20
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
              for p in (step_pid, grandchild, rec["guard_pid"])):
        assert time.time() < deadline, "a process of the killed runner's step is still running"
        time.sleep(0.2)
    # nothing left alive: a rerun is not refused
    StepRunner(tmp_path / "out", echo=lambda _: None).run([])


def test_no_credentials_in_steps_file_or_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-env-secret-7788")
    url = "http://alice:hunter2pw@127.0.0.1:9/v1?api_key=QUERYSECRET"
    code = ("import os; print('calling', " + repr(url) + "); print('echo: Authorization: Basic YWxpY2U6aHVudGVy'); "
            "print('server said: bad key', os.environ['MY_SERVICE_API_KEY'])")
    step = Step("s", [*_py(code), "--base-url", url], [], 1)
    StepRunner(tmp_path / "out", echo=lambda _: None).run([step])
    written = (tmp_path / "out" / "steps.json").read_text() + (tmp_path / "out" / "logs" / "s.log").read_text()
    for secret in ("hunter2pw", "QUERYSECRET", "YWxpY2U6aHVudGVy", "sk-env-secret-7788"):
        assert secret not in written
    assert "calling http://***@127.0.0.1:9/v1?api_key=***" in written


def test_safekey_steps_are_forked_by_one_warm_host(tmp_path, monkeypatch):
    """`safekey` steps start from a host that imported torch and transformers once (the ~6 CPU-s a
    step spent importing them), output and exit status as before; a step whose environment differs
    from the host's, or any other command, starts cold under the guard."""
    from safekey import stephost
    from safekey.steps import cli

    started: list[tuple[int, int]] = []
    orig = stephost.WarmHost.start

    def spy(self, *a, **kw):
        proc = orig(self, *a, **kw)
        started.append((self.pid, proc.pid))
        return proc

    monkeypatch.setattr(stephost.WarmHost, "start", spy)
    monkeypatch.setattr(stephost, "_shared", None)  # a host of this test's own (the worker's is put back after)
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # every import a process makes, on its stderr
    out = tmp_path / "out"
    steps = [Step("list", cli("run", "--list"), [], 1), Step("doctor", cli("doctor"), [], 1),
             Step("flag-env", cli("doctor"), [], 1, env={"SAFEKEY_HOME": str(tmp_path / "home-x"), "COLUMNS": "400"}),  # set in the fork
             Step("other-env", cli("run", "--list"), [], 1, env={"HF_HUB_OFFLINE": "0"}),  # read at import: cold
             Step("plain", _py("print('plain step')"), [], 1)]
    StepRunner(out, echo=lambda _: None).run(steps)
    assert len(started) == 3 and len({h for h, _ in started}) == 1 and len({p for _, p in started}) == 3
    assert stephost._shared is not None and stephost._shared.pid == started[0][0]  # this process's host …
    host_log = Path(stephost._shared.log_path).read_text()
    logs = {s.name: (out / "logs" / f"{s.name}.log").read_text() for s in steps}
    assert "torch._C\n" in host_log and "transformers.conversion_mapping\n" in host_log  # imported once, here …
    assert "torch._C\n" not in logs["doctor"] and "safekey doctor" in logs["doctor"]  # … not in a step that uses torch
    assert "baselines-mini" in logs["list"]
    assert "baselines-mini" in logs["other-env"] and str(tmp_path / "home-x") in " ".join(logs["flag-env"].split()) and "plain step" in logs["plain"]
    assert psutil.pid_exists(started[0][0])  # … kept for the next runner of this process (closed at exit)
    # a failing step fails the run as before: its exit status and its log's last lines
    bad = Step("bad", cli("data", "select", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x.jsonl")), [], 1)
    with pytest.raises(SafekeyError, match=r"step bad failed \(exit 2\)[\s\S]*missing\.jsonl"):
        StepRunner(out, echo=lambda _: None).run([bad])
    assert len(started) == 4 and started[3][0] == started[0][0]
    # control: the same doctor step started cold imports torch itself
    monkeypatch.setenv("SAFEKEY_WARM_STEPS", "0")
    StepRunner(tmp_path / "cold", echo=lambda _: None).run([steps[1]])
    assert len(started) == 4 and "torch._C\n" in (tmp_path / "cold" / "logs" / "doctor.log").read_text()
    stephost._shared.close()


def test_warm_host_stays_off_on_a_gpu_machine_unless_asked(monkeypatch):
    """CUDA does not survive a fork once the driver is initialised (an import may ask for the device
    count): where a GPU device node exists, steps start cold unless SAFEKEY_WARM_STEPS=1."""
    from safekey import stephost

    real = os.path.exists
    monkeypatch.delenv("SAFEKEY_WARM_STEPS", raising=False)
    assert stephost.warm_enabled() == (not any(real(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")))
    monkeypatch.setattr(stephost.os.path, "exists", lambda p: p == "/dev/nvidiactl" or real(p))
    assert not stephost.warm_enabled()
    assert stephost.warm_argv([sys.executable, "-m", "safekey.cli.main", "run", "--list"]) is None
    monkeypatch.setenv("SAFEKEY_WARM_STEPS", "1")
    assert stephost.warm_enabled()
    monkeypatch.setenv("SAFEKEY_WARM_STEPS", "0")
    monkeypatch.setattr(stephost.os.path, "exists", real)
    assert not stephost.warm_enabled()


def test_a_quick_step_is_not_waited_for_after_it_ended(tmp_path):
    """The runner looks for the guard's child to record its pid; a step that already ended is not
    polled for (the 10 s poll used to run out on every quick step)."""
    steps, src, end, _ = _chain(tmp_path)
    src.write_text("a")
    t0 = time.monotonic()
    StepRunner(tmp_path / "out", echo=lambda _: None).run(steps)
    assert end.read_text() == "a|RESUME" and time.monotonic() - t0 < 15  # was ≥ 20 s: 10 s per step


def test_die_with_parent_says_when_the_parent_is_already_gone():
    """What `train.launch.die_with_launcher` refuses on: a rank whose launcher ended before it asked."""
    code = ("import sys; from safekey.stepguard import die_with_parent; import os; "
            "sys.exit(10 * die_with_parent(parent=os.getppid()) + (not die_with_parent(parent=os.getppid() + 999999)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 11, r.stderr
