"""`safekey run` never reports a stale number (issue #23 A): kill -9 mid-training (the runner under
the python launcher, the runner's process group under torchrun) and rerun → the training resumes
from its last complete checkpoint and ends on the weights of an uninterrupted run, with no process
left behind; a retrained model or a benchmark file edited in place is evaluated again; bad values
are refused before the first step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cli_process
import psutil
import pytest
import yaml
from cli_helpers import run_cli

from safekey.experiment import load_experiment, plan_steps
from safekey.paths import resource
from safekey.types import SafekeyError


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


_run = run_cli


def _spec(model: Path, **kw) -> dict:
    return {"name": "t", "model": str(model), "offline": True, "include_base": False, "train_data": "{starter}/train.jsonl",
            "variants": [{"name": "sft", "mode": "sft"}], **kw}


# -- A5: values checked before anything starts ---------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"seeds": [-1]}, "seeds.0"), ({"seeds": [2**32]}, "seeds.0"), ({"train": {"epochs": -1}}, "train.epochs"),
    ({"train": {"limit": 0}}, "train.limit"), ({"safety": {"bench_files": ["x.jsonl"], "limit": "nosuch=2"}}, "names 'nosuch'"),
    ({"safety": {"benches": ["strongreject"], "limit": -3}}, "positive N"),
])
def test_bad_values_are_refused_before_the_first_step(tmp_path, tiny_model_dir, capsys, change, message):
    spec = _write(tmp_path / "e.yaml", {**_spec(tiny_model_dir), **change})
    with pytest.raises(SafekeyError, match=message):
        load_experiment(spec)
    code, text = _run(["run", str(spec), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and message.split(".")[0] in text and "Traceback" not in text
    assert not (tmp_path / "out").exists()  # nothing started


def test_eval_limit_must_name_a_benchmark(tmp_path, capsys):
    bench = tmp_path / "mine.jsonl"
    bench.write_text('{"id": "a", "question": "q", "unsafe": 1}\n')
    code, text = _run(["eval", "safety", "--model", "hf:/nonexistent", "--bench-file", str(bench), "--limit", "nosuch=2",
                       "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "--limit names 'nosuch'" in text


def test_relative_paths_resolve_against_the_experiment_file(tmp_path, tiny_model_dir, capsys, monkeypatch):
    spec = _write(tmp_path / "sub" / "e.yaml", {**_spec(tiny_model_dir), "out": "results",
                                                "launch": {"kind": "accelerate", "accelerate_config": "acc.yaml"}})
    (tmp_path / "sub" / "acc.yaml").write_text("distributed_type: MULTI_GPU\nnum_processes: 1\n")
    monkeypatch.chdir(tmp_path)
    code, text = _run(["run", str(spec), "--dry-run"], capsys)
    assert code == 0, text
    assert f"-o {tmp_path / 'sub' / 'results' / 'train' / 'sft'}" in text
    assert f"--config_file {tmp_path / 'sub' / 'acc.yaml'}" in text


def test_yaml_alias_expansion_is_bounded(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nname: t\ntrain_data: x\nvariants: *a8\n")
    assert bomb.stat().st_size < 1000
    t0 = time.time()
    with pytest.raises(SafekeyError, match="expands to more than"):
        load_experiment(bomb)
    assert time.time() - t0 < 5


# -- A3: a step is done only for the inputs it ran on ----------------------------------------------------------


def test_retrained_model_and_edited_bench_are_evaluated_again(tmp_path, tiny_model_dir, capsys):
    bench = tmp_path / "bench.jsonl"
    rows = [json.loads(x) for x in resource("starter/heldout_harmful.jsonl").read_text().splitlines()[:2]]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = _write(tmp_path / "e.yaml", _spec(tiny_model_dir, train={
        "epochs": 1, "max_length": 128, "limit": 4, "set": {"effective_batch": 2, "per_device_batch": 2, "save_total_limit": 1, "last_k_epochs": 1}},
        safety={"bench_files": [str(bench)], "judge": "keyword", "max_new_tokens": 4, "batch_size": 4}))
    out = tmp_path / "out"
    code, text = _run(["run", str(spec), "-o", str(out)], capsys)
    assert code == 0, text
    summary = out / "eval" / "sft" / "summary.json"
    first = json.loads(summary.read_text())["weights"]
    # retrain the model in place (another seed), as a user fixing a run by hand would
    exp, here = load_experiment(spec)
    train = next(s for s in plan_steps(exp, here, out, str(tiny_model_dir))[0] if s.name == "train-sft")
    cfg = out / "configs" / "train-sft.yaml"
    other = tmp_path / "seed7.yaml"
    other.write_text(cfg.read_text().replace("seed: 2002", "seed: 7"))
    cmd = [str(other) if a == str(cfg) else a for a in train.cmd] + ["--overwrite"]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    # the old evaluation is never shown under the model's name
    code, text = _run(["report", str(out), "-o", str(tmp_path / "r.html")], capsys)
    assert code == 2 and "evaluated other weights" in text
    code, text = _run(["run", str(spec), "-o", str(out)], capsys)
    assert code == 0, text
    assert "eval-sft: its inputs changed" in text
    again = json.loads(summary.read_text())["weights"]
    assert again != first
    from safekey.llm.core import local_model_id

    assert again == local_model_id(out / "train" / "sft")
    # a benchmark file edited in place (same path, same command line) is evaluated again
    rows[0]["question"] = "EDITED: " + rows[0]["question"]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text = _run(["run", str(spec), "-o", str(out)], capsys)
    assert code == 0, text
    assert "eval-sft: its inputs changed" in text and "train-sft: its inputs changed" not in text
    gens = (out / "eval" / "sft" / "bench" / "generations.jsonl").read_text()
    assert "EDITED: " in gens
    # an eval setting changed in the experiment reaches the eval through its config file (one shape,
    # no copied flags), and only the evals rerun
    cfg_file = out / "configs" / "safety.yaml"
    assert yaml.safe_load(cfg_file.read_text())["max_new_tokens"] == 4
    code, text = _run(["run", str(spec), "-o", str(out), "--set", "safety.max_new_tokens=3"], capsys)
    assert code == 0, text
    assert "eval-sft: its inputs changed" in text and "train-sft: its inputs changed" not in text
    assert yaml.safe_load(cfg_file.read_text())["max_new_tokens"] == 3
    assert json.loads(summary.read_text())["sampling"]["max_new_tokens"] == 3


# -- A1 + A2: kill -9 mid-training, rerun resumes, nothing left running -----------------------------------------


def _kill_mid_training(tmp_path: Path, spec: Path, out: Path, *, group: bool) -> None:
    runner = cli_process.popen(["run", str(spec), "-o", str(out)],
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "running.json").exists():
        assert runner.poll() is None and time.time() < deadline, "the training step never started"
        time.sleep(0.05)
    # a second runner on the same folder is refused while the first one runs, naming its pid
    second = cli_process.run(["run", str(spec), "-o", str(out)],
                            capture_output=True, text=True)
    assert second.returncode == 2 and f"pid {runner.pid}" in second.stderr, second.stderr
    ckpts = out / "train" / "sft" / "checkpoints"
    while not any((c / "trainer_state.json").exists() for c in ckpts.glob("checkpoint-*")):
        assert runner.poll() is None and time.time() < deadline, "no checkpoint before the runner ended"
        time.sleep(0.05)
    tree = psutil.Process(runner.pid).children(recursive=True)
    assert not (out / "train" / "sft" / "train_stats.json").exists(), "training finished before the kill"
    rec = json.loads((out / "running.json").read_text())
    # a one-process training is forked by the warm step host; a torchrun launch starts under the guard
    host = "safekey.stephost" in " ".join(psutil.Process(rec["guard_pid"]).cmdline())
    assert host == (not group) and psutil.Process(rec["step_pid"]).ppid() == rec["guard_pid"]
    if group:
        os.killpg(runner.pid, signal.SIGKILL)
    else:
        os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    deadline = time.time() + 40
    while alive := [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
        assert time.time() < deadline, f"orphans of the killed runner: {[p.cmdline()[:4] for p in alive]}"
        time.sleep(0.2)


def _train_spec(tiny_model_dir: Path, **kw) -> dict:
    return _spec(tiny_model_dir, train={"epochs": 3, "max_length": 128, "limit": 24, "set": {
        "effective_batch": 2, "per_device_batch": kw.pop("per_device", 2), "save_steps": 3, "save_total_limit": 2,
        "last_k_epochs": 1}}, **kw)


@pytest.mark.slow
def test_kill_runner_mid_training_then_rerun_resumes(tmp_path, tiny_model_dir, capsys):
    spec = _write(tmp_path / "e.yaml", _train_spec(tiny_model_dir))
    out = tmp_path / "out"
    _kill_mid_training(tmp_path, spec, out, group=False)
    code, text = _run(["run", str(spec), "-o", str(out)], capsys)
    assert code == 0, text
    log = (out / "logs" / "train-sft.log").read_text()
    assert "resuming from" in log and "checkpoint-" in log
    stats = json.loads((out / "train" / "sft" / "train_stats.json").read_text())
    assert stats["global_step"] == 36
    # the same weights as an uninterrupted run
    ref = tmp_path / "ref"
    code, text = _run(["run", str(spec), "-o", str(ref)], capsys)
    assert code == 0, text
    from safetensors.torch import load_file

    a, b = (load_file(str(d / "train" / "sft" / "model.safetensors")) for d in (out, ref))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    # finished and unchanged: a rerun skips the training
    code, text = _run(["run", str(spec), "-o", str(out)], capsys)
    assert code == 0 and "train-sft  (" not in text


@pytest.mark.multirank
@pytest.mark.slow
def test_kill_process_group_under_torchrun_then_rerun_resumes(tmp_path, tiny_model_dir, capsys):
    spec = _write(tmp_path / "e.yaml", _train_spec(tiny_model_dir, per_device=1, launch={
        "kind": "torchrun", "nproc": 2, "env": {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}}))
    out = tmp_path / "out"
    _kill_mid_training(tmp_path, spec, out, group=True)
    code, text = _run(["run", str(spec), "-o", str(out)], capsys)
    assert code == 0, text
    assert "resuming from" in (out / "logs" / "train-sft.log").read_text()
    stats = json.loads((out / "train" / "sft" / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["global_step"] == 36


def test_launcher_world_size_must_match(tmp_path, tiny_model_dir, capsys, monkeypatch):
    spec = _write(tmp_path / "e.yaml", {**_spec(tiny_model_dir), "launch": {"kind": "accelerate", "nproc": 2,
                                                                           "accelerate_config": "acc.yaml"}})
    (tmp_path / "acc.yaml").write_text("distributed_type: MULTI_CPU\nnum_processes: 8\n")
    code, text = _run(["run", str(spec), "--dry-run"], capsys)
    assert code == 2 and "launch.nproc=2 but" in text and "num_processes: 8" in text
    # `accelerate launch` MULTI_CPU without mpirun: the rendezvous is set, one process starts → refused
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, text = _run(["train", "run", str(resource("starter/train.jsonl")), "--model", str(tiny_model_dir), "--limit", "2",
                       "-o", str(tmp_path / "t")], capsys)
    assert code == 2 and "started one" in text and "torchrun" in text


def test_presets_dry_run_checks_the_vllm_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAFEKEY_VLLM_PYTHON", str(tmp_path / "nope" / "python"))
    code, text = _run(["run", "star1-sft", "--dry-run", "-o", str(tmp_path / "o")], capsys)
    assert f"{tmp_path / 'nope' / 'python'} -m safekey.cli.main eval safety" in text
    assert "check: error: vllm env: safety.python:" in text and "does not exist" in text
    assert code == 2 and "check(s) found an error" in text  # a dry run whose checks fail says so in its exit code
    monkeypatch.setenv("SAFEKEY_VLLM_PYTHON", sys.executable)  # exists, but has no vllm here
    code, text = _run(["run", "star1-sft", "--dry-run", "-o", str(tmp_path / "o")], capsys)
    assert "cannot import vllm" in text or "check:" not in text  # (where vllm is installed there is nothing to say)


def test_doctor_reads_an_experiment_file(tmp_path, tiny_model_dir, capsys):
    spec = _write(tmp_path / "e.yaml", {**_spec(tiny_model_dir), "launch": {"kind": "torchrun", "nproc": 2},
                                        "safety": {"benches": ["strongreject"], "judge": "llama-guard", "python": "vllm-env",
                                                   "backend": "vllm"}})
    for argv in (["doctor", str(spec)], ["doctor", "--config", str(spec)]):
        code, text = _run(argv, capsys)
        assert "Extra inputs" not in text
        assert "launch" in text and "torchrun" in text and "vllm env" in text and "Llama-Guard-3-8B" in text
        assert code == 2  # the vLLM environment is missing here
