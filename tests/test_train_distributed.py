"""Two real ranks (torchrun, gloo on CPU), DDP and DeepSpeed ZeRO-3 through the Trainer: the same
losses and weights as one process on the same global batch, kill -9 + resume equal to the
uninterrupted run, gradient checkpointing on, LoRA merged from gathered weights, and the refusal
of a launch transformers would run as independent single-process trainings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cli_process
import pytest
import torch
from test_train_spans import first_sentence_spans

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.multirank  # one worker runs these one at a time (tests/conftest.py)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(shared, tmp_path, n=8):
    rows = json.loads(shared("star1/STAR-1.json").read_text())[:n]
    data = tmp_path / "d.jsonl"
    with data.open("w") as f:
        for i, r in enumerate(rows):
            u, k = first_sentence_spans(r["response"])
            rec = {"id": r["id"], "question": r["question"], "response": r["response"], "u_end": u, "k_end": k, "unsafe": i % 2}
            f.write(json.dumps(rec) + "\n")
    return data


def _train_args(data, model, out, *extra):
    return ["-m", "safekey.cli.main", "train", "run", str(data), "--model", str(model), "--mode", "safekey", "-o", str(out),
            "--epochs", "2", "--max-length", "256", "--set", "effective_batch=4", "--set", "last_k_epochs=1",
            "--set", "logging_steps=1", "--set", "gradient_checkpointing=true", "--set", "lr=1e-3", *extra]


def _launch(nproc, args, *, wait=True, warm=True):
    """Two real ranks: torchrun + ACCELERATE_USE_CPU (an accelerate MULTI_CPU config without mpirun
    starts ONE process, which is what this test used to run without noticing). `warm`: each rank
    forked from the worker's rank host (tests/warm_rank.py), else `torchrun -m safekey.cli.main`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(_free_port()), *args]
        if warm:
            cmd, env = cli_process.warm_ranks(cmd, env)
    elif args[:2] == ["-m", "safekey.cli.main"]:  # one process: forked from the warm host where it can be
        if not wait:
            return cli_process.popen(args[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=REPO, start_new_session=True)
        r = cli_process.run(args[2:], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
        return r
    else:
        cmd = [sys.executable, *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                                start_new_session=True)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _kill_9_at_checkpoint(proc, out, step: int = 2, *, launcher_only: bool = False):
    """kill -9 once checkpoint-STEP is complete; the run must not have finished. By default the
    launcher and every rank at once (a node that died): torchrun starts each rank in a session of its
    own, so a kill of the launcher's process group reaches no rank. `launcher_only`: kill just that
    group; the ranks must end on their own (train.launch.die_with_launcher) — they used to train to
    the end beside the "resumed" run, which then proved nothing about resuming."""
    import psutil

    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").exists():
        time.sleep(0.05)
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    if launcher_only:
        assert len(tree) >= 3, tree  # the launcher and its two ranks, which must end with it
    for p in tree[:1] if launcher_only else tree:
        try:
            if os.getpgid(p.pid) == p.pid:  # a session leader: its group too (what a rank started)
                os.killpg(p.pid, signal.SIGKILL)
            else:
                p.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"still running after kill -9: {alive}"
    cli_process.wait_warm_ranks_gone()
    assert (out / "checkpoints" / f"checkpoint-{step}").exists() and not (out / "model.safetensors").exists()


_kill_9_at_checkpoint_2 = _kill_9_at_checkpoint


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


def _weights_dir(model_dir):
    return _weights(Path(model_dir))


@pytest.fixture(scope="module")
def ddp_runs(shared, tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = _records(shared, tmp)
    one = _launch(1, _train_args(data, tiny_model_dir, tmp / "one", "--set", "per_device_batch=2"))
    two = _launch(2, _train_args(data, tiny_model_dir, tmp / "two", "--set", "per_device_batch=1"), warm=False)
    return {"data": data, "tmp": tmp, "one": tmp / "one", "two": tmp / "two", "stderr_two": two.stderr, "stderr_one": one.stderr,
            "model": tiny_model_dir}


def test_two_real_ranks_match_one_process(ddp_runs):
    stats = json.loads((ddp_runs["two"] / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["plan"]["world_size"] == 2 and stats["plan"]["parallel_mode"] == "distributed"
    assert stats["grad_accum"] == 2 and stats["plan"]["effective_batch"] == 4
    assert stats["plan"]["weights_partitioned_at_load"] is False  # DDP: every rank holds the whole model
    assert "plan: world size 2 (distributed)" in ddp_runs["stderr_two"]
    one = json.loads((ddp_runs["one"] / "train_stats.json").read_text())
    assert one["world_size"] == 1 and one["plan"]["effective_batch"] == 4
    log2 = [json.loads(x) for x in (ddp_runs["two"] / "train_log.jsonl").read_text().splitlines()]
    log1 = [json.loads(x) for x in (ddp_runs["one"] / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log2] == [1, 2, 3, 4]  # 8 examples / (2 ranks x 1 x 2 accumulation) x 2 epochs
    assert [r["extras_active"] for r in log2] == [False, False, True, True]
    # the same global batch per step (rank r gets every 2nd example of the same seeded order): the
    # same losses as one process — which is also what shows the shards are disjoint and complete
    for a, b in zip(log1, log2):
        for k in ("loss", "lm_loss", "qmm_loss", "head_loss"):
            assert b[k] == pytest.approx(a[k], rel=2e-4, abs=1e-5), (k, a, b)
    for row in log2:
        total = row["lm_loss"] + 0.2 * row["qmm_loss"] + 0.2 * row["head_loss"]
        assert abs(row["loss"] - total) < 1e-3 * max(1.0, abs(total)), row
    assert all(row["qmm_loss"] > 0 and row["head_loss"] > 0 for row in log2[2:])
    w1, w2 = _weights(ddp_runs["one"]), _weights(ddp_runs["two"])
    assert not any("safekey_heads" in k for k in w2)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(ddp_runs["two"]))


def test_two_ranks_kill_9_then_resume_equals_uninterrupted(ddp_runs, tiny_model_dir):
    out = ddp_runs["tmp"] / "killed"
    args = _train_args(ddp_runs["data"], tiny_model_dir, out, "--set", "per_device_batch=1", "--set", "save_steps=1",
                       "--set", "save_total_limit=10")
    # torchrun's own ranks (not forked): the product's promise that they end with their launcher
    _kill_9_at_checkpoint_2(_launch(2, args, wait=False, warm=False), out, launcher_only=True)
    _launch(2, [*args, "--resume"])
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["global_step"] == 4
    ref, got = _weights(ddp_runs["two"]), _weights(out)
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-6), k
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


def test_fsdp_config_on_cpu_is_refused_not_run_twice(shared, tiny_model_dir, tmp_path):
    """transformers runs FSDP only on accelerators; on CPU each rank would silently train alone."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs/accelerate/fsdp.yaml").read_text())
    cfg.update(num_processes=2, use_cpu=True, mixed_precision="no")
    (tmp_path / "fsdp_cpu.yaml").write_text(yaml.safe_dump(cfg))
    rows = json.loads(shared("star1/STAR-1.json").read_text())[:2]
    lines = []
    for i, row in enumerate(rows):  # both classes: the refusal under test is FSDP's, not the head's
        u, k = first_sentence_spans(row["response"])
        lines.append(json.dumps({**{x: row[x] for x in ("id", "question", "response")}, "u_end": u, "k_end": k,
                                 "unsafe": 1 - i}) + "\n")
    (tmp_path / "d.jsonl").write_text("".join(lines))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp_cpu.yaml"),
        "--main_process_port", str(_free_port()), "-m", "safekey.cli.main", "train", "run", str(tmp_path / "d.jsonl"),
        "--model", str(tiny_model_dir), "--mode", "safekey", "-o", str(tmp_path / "out"), "--max-length", "256",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert r.returncode != 0
    # refused before any training: accelerate enables FSDP only on accelerators
    assert "FSDP was requested" in r.stderr + r.stdout and "nothing would be sharded" in r.stderr + r.stdout
    assert not (tmp_path / "out" / "model.safetensors").exists()


# -- DeepSpeed ZeRO-3 through the Trainer, on 2 CPU ranks over gloo ------------------------------

ZERO3 = str(REPO / "configs" / "deepspeed" / "zero3_cpu.json")


def _needs_deepspeed():
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        pytest.skip("deepspeed not installed (make install adds it: pip install --no-build-isolation deepspeed)")


def _sharded(args):
    """torchrun without ACCELERATE_USE_CPU: a `deepspeed=` or `fsdp=` config makes safekey build the
    gloo state (and, for FSDP, turn FSDP on in accelerate's state, which enables it only on accelerators)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), *args]
    return cli_process.warm_ranks(cmd, env)  # each rank forked from the worker's rank host (tests/warm_rank.py)


@pytest.fixture(scope="module")
def zero3_run(ddp_runs):
    _needs_deepspeed()
    out = ddp_runs["tmp"] / "zero3"
    cmd, env = _sharded(_train_args(ddp_runs["data"], ddp_runs["model"], out, "--set", "per_device_batch=1",
                                  "--set", f"deepspeed={ZERO3}"))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stderr


def test_zero3_two_ranks_match_one_process(ddp_runs, zero3_run):
    """SafeKey's two forwards per step, the heads called outside the forward and gradient
    checkpointing, with every weight partitioned across the 2 ranks: the same losses and final
    weights as one plain process on the same global batch."""
    out, stderr = zero3_run
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["plan"]["sharding"] == "deepspeed zero-3"
    assert stats["plan"]["gradient_checkpointing"] and "sharding deepspeed zero-3 (weights partitioned at load)" in stderr
    # HF's DeepSpeed config was active before from_pretrained: zero.Init gave each rank only its
    # partition (loaded before the TrainingArguments, every rank held the full fp32 model first)
    assert stats["plan"]["weights_partitioned_at_load"] is True
    log1 = [json.loads(x) for x in (ddp_runs["one"] / "train_log.jsonl").read_text().splitlines()]
    logz = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logz] == [1, 2, 3, 4] and [r["extras_active"] for r in logz] == [False, False, True, True]
    for a, b in zip(log1, logz):
        for k in ("loss", "lm_loss", "qmm_loss", "head_loss"):
            assert b[k] == pytest.approx(a[k], rel=2e-4, abs=1e-5), (k, a, b)
    w1, wz = _weights(ddp_runs["one"]), _weights(out)
    assert set(w1) == set(wz) and not any("safekey_heads" in k for k in wz)
    for k in w1:
        assert torch.allclose(w1[k], wz[k], atol=1e-5), k


def test_zero3_kill_9_then_resume_equals_uninterrupted(ddp_runs, zero3_run):
    out = ddp_runs["tmp"] / "zero3-killed"
    cmd, env = _sharded(_train_args(ddp_runs["data"], ddp_runs["model"], out, "--set", "per_device_batch=1",
                                  "--set", f"deepspeed={ZERO3}", "--set", "save_steps=1", "--set", "save_total_limit=10"))
    _kill_9_at_checkpoint_2(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO,
                                             start_new_session=True), out)
    r = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["global_step"] == 4
    ref, got = _weights(zero3_run[0]), _weights(out)
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-6), k


def test_zero3_lora_export_gathers_the_full_weights(ddp_runs):
    """LoRA under ZeRO-3: each rank holds slices, so the merge must run on gathered weights; the
    merged model equals the one-process LoRA run (dropout 0: the ranks draw other dropout masks)."""
    _needs_deepspeed()
    tmp = ddp_runs["tmp"]
    lora = ("--lora", "--set", "lora_dropout=0")
    cmd, env = _sharded(_train_args(ddp_runs["data"], ddp_runs["model"], tmp / "z3-lora", "--set", "per_device_batch=1",
                                  "--set", f"deepspeed={ZERO3}", *lora))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    _launch(1, _train_args(ddp_runs["data"], ddp_runs["model"], tmp / "one-lora", "--set", "per_device_batch=2", *lora))
    base, one, z3 = _weights_dir(ddp_runs["model"]), _weights(tmp / "one-lora"), _weights(tmp / "z3-lora")
    assert set(one) == set(z3) and not any("lora_" in k for k in z3)
    assert max((one[k] - base[k]).abs().max().item() for k in base) > 1e-3  # the merge moved the weights
    for k in one:
        assert torch.allclose(one[k], z3[k], atol=1e-6), k


def test_zero3_config_in_a_plain_single_process(ddp_runs):
    """`python -m safekey.cli.main train run … --set deepspeed=…` without torchrun: one rank (it
    crashed with "Default process group has not been initialized")."""
    _needs_deepspeed()
    out = ddp_runs["tmp"] / "zero3-single"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for k in ("ACCELERATE_USE_CPU", "LOCAL_RANK", "RANK", "WORLD_SIZE"):
        env.pop(k, None)
    args = _train_args(ddp_runs["data"], ddp_runs["model"], out, "--set", "per_device_batch=2", "--set", f"deepspeed={ZERO3}")
    r = cli_process.run(args[2:], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["world_size"] == 1 and stats["plan"]["sharding"] == "deepspeed zero-3" and stats["global_step"] == 4


# -- FSDP2 (torch fully_shard) through the Trainer, on 2 CPU ranks over gloo ----------------------

FSDP2 = str(REPO / "configs" / "fsdp" / "fsdp2.json")


@pytest.fixture(scope="module")
def fsdp_run(ddp_runs):
    """DPSH/QMM on in both epochs, so the heads are trained before the kill-9 test's checkpoint."""
    both = ("--set", "last_k_epochs=2")
    one = ddp_runs["tmp"] / "one-extras-both"
    _launch(1, _train_args(ddp_runs["data"], ddp_runs["model"], one, "--set", "per_device_batch=2", *both))
    out = ddp_runs["tmp"] / "fsdp2"
    cmd, env = _sharded(_train_args(ddp_runs["data"], ddp_runs["model"], out, "--set", "per_device_batch=1",
                                 "--set", f"fsdp={FSDP2}", *both))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stderr, one


def test_fsdp2_two_ranks_match_one_process(ddp_runs, fsdp_run):
    """Every weight a DTensor shard on 2 ranks, decoder layers as shard units, FSDP's activation
    checkpointing, SafeKey's two forwards and the heads (+ lm_head in the lean loss) called
    outside the forward: the same losses and final weights as one plain process."""
    out, stderr, one = fsdp_run
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["plan"]["world_size"] == 2
    assert stats["plan"]["sharding"] == "fsdp2 (sharded_state_dict checkpoints)", stats["plan"]
    assert stats["plan"]["gradient_checkpointing"] and "sharding fsdp2" in stderr
    log1 = [json.loads(x) for x in (one / "train_log.jsonl").read_text().splitlines()]
    logf = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logf] == [1, 2, 3, 4] and all(r["extras_active"] for r in logf)
    assert len(log1) == 4 and all(r["qmm_loss"] > 0 and r["head_loss"] > 0 for r in logf)
    for a, b in zip(log1, logf):
        for k in ("loss", "lm_loss", "qmm_loss", "head_loss"):
            assert b[k] == pytest.approx(a[k], rel=2e-4, abs=1e-5), (k, a, b)
    w1, wf = _weights(one), _weights(out)
    assert set(w1) == set(wf) and not any("safekey_heads" in k for k in wf)
    for k in w1:
        assert torch.allclose(w1[k], wf[k], atol=1e-5), k
    # the checkpoints are per-rank slices (what makes a 7B checkpoint fit), not one full copy
    ckpt = sorted((out / "checkpoints").glob("checkpoint-*"))[-1]
    assert list(ckpt.glob("pytorch_model_fsdp_0/*.distcp")), sorted(p.name for p in ckpt.iterdir())


def test_fsdp2_kill_9_then_resume_with_the_heads(ddp_runs, fsdp_run):
    """Killed after step 2, resumed from the sharded checkpoint: the heads come back with the FSDP
    load (a second plain load_state_dict of the heads file crashed on DTensors), and the final
    weights equal the uninterrupted FSDP2 run."""
    out = ddp_runs["tmp"] / "fsdp2-killed"
    cmd, env = _sharded(_train_args(ddp_runs["data"], ddp_runs["model"], out, "--set", "per_device_batch=1",
                                 "--set", f"fsdp={FSDP2}", "--set", "save_steps=1", "--set", "save_total_limit=10",
                                 "--set", "last_k_epochs=2"))
    _kill_9_at_checkpoint_2(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO,
                                             start_new_session=True), out)
    r = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["global_step"] == 4
    ref_out = fsdp_run[0]  # the uninterrupted run, same settings
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    ref_log = [json.loads(x) for x in (ref_out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["extras_active"] for r in log)
    for a, b in zip(ref_log, log):  # step 3's head loss depends on the heads restored at step 2
        assert b["head_loss"] == pytest.approx(a["head_loss"], rel=1e-5), (a, b)
    ref, got = _weights(ref_out), _weights(out)
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-6), k


def test_fsdp2_lora_export_gathers_the_full_weights(ddp_runs):
    """LoRA under FSDP2: merged from the gathered weights, equal to the one-process LoRA run."""
    tmp = ddp_runs["tmp"]
    lora = ("--lora", "--set", "lora_dropout=0")
    cmd, env = _sharded(_train_args(ddp_runs["data"], ddp_runs["model"], tmp / "fsdp-lora", "--set", "per_device_batch=1",
                                 "--set", f"fsdp={FSDP2}", *lora))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    if not (tmp / "one-lora" / "model.safetensors").exists():
        _launch(1, _train_args(ddp_runs["data"], ddp_runs["model"], tmp / "one-lora", "--set", "per_device_batch=2", *lora))
    base, one, got = _weights_dir(ddp_runs["model"]), _weights(tmp / "one-lora"), _weights(tmp / "fsdp-lora")
    assert set(one) == set(got) and not any("lora_" in k for k in got)
    assert max((one[k] - base[k]).abs().max().item() for k in base) > 1e-3
    for k in one:
        assert torch.allclose(one[k], got[k], atol=1e-6), k
