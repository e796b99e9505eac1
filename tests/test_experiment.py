"""`safekey run EXPERIMENT`: presets, validation errors, the planned commands, and real runs on a
tiny model (2 seeds × SFT/SafeKey → evals → aha + probe → report with the seed table; resume; a
torchrun launch that trains on 2 ranks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from safekey.cli.main import cli
from safekey.experiment import load_experiment, plan_steps, presets
from safekey.steps import Step, StepRunner
from safekey.types import SafekeyError


def _write(tmp: Path, data: dict) -> Path:
    p = tmp / "exp.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


BASE = {"name": "t", "train_data": "{starter}/train.jsonl", "variants": [{"name": "sft", "mode": "sft"}]}


def _train_cfg(step: Step) -> dict:
    """The train config a step writes before it runs (`train run --config FILE`)."""
    (text,) = step.writes.values()
    return yaml.safe_load(text)


def test_presets_load_and_plan():
    assert {"demo", "replicate-mini", "star1-sft", "safekey"} <= set(presets())
    for name in presets():
        exp, here = load_experiment(name)
        steps, manifest = plan_steps(exp, here, Path("/tmp/x"), exp.model)
        assert steps[-1].name == "report" and manifest["models"]
    exp, here = load_experiment("replicate-mini")
    steps, manifest = plan_steps(exp, here, Path("/tmp/x"), exp.model)
    # 5 variants × 3 seeds + base; each model's eval right after its training
    assert len(manifest["models"]) == 16 and manifest["groups"]["safekey"] == ["safekey-s1", "safekey-s2", "safekey-s3"]
    names = [s.name for s in steps]
    assert names[:3] == ["eval-base", "train-sft-s1", "eval-sft-s1"]
    ablation = _train_cfg(next(s for s in steps if s.name == "train-no-dpsh-s2"))
    assert ablation["head"] is False and ablation["seed"] == 2
    assert _train_cfg(next(s for s in steps if s.name == "train-qmm-unmasked-s3"))["qmm_unmasked"] is True
    star = plan_steps(*load_experiment("star1-sft"), Path("/tmp/x"), "M")[0]
    train = next(s for s in star if s.name.startswith("train-"))
    assert train.cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "8"]
    # ZeRO-3 inline: 7B does not fit plain DDP
    assert _train_cfg(train)["deepspeed"]["zero_optimization"]["stage"] == 3
    ev = next(s for s in star if s.name == "eval-star1-sft").cmd
    assert ev[ev.index("--model") + 1] == "vllm:/tmp/x/train/star1-sft"  # the paper presets generate with vLLM


def test_experiment_errors_are_one_line(tmp_path):
    with pytest.raises(SafekeyError, match=r"did you mean 'replicate-mini'"):
        load_experiment("replicate-mimi")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nvariants: [\n", encoding="utf-8")
    with pytest.raises(SafekeyError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_experiment(bad)
    with pytest.raises(SafekeyError, match=r"variants\.0\.mode"):
        load_experiment(_write(tmp_path, {**BASE, "variants": [{"name": "x", "mode": "ppo"}]}))
    with pytest.raises(SafekeyError, match=r"from_variant 'sft' must name an earlier variant"):
        load_experiment(_write(tmp_path, {**BASE, "variants": [{"name": "g", "mode": "grpo", "from_variant": "sft"},
                                                               {"name": "sft", "mode": "sft"}]}))
    with pytest.raises(SafekeyError, match=r"trian: Extra inputs"):
        load_experiment(_write(tmp_path, {**BASE, "trian": {}}))
    with pytest.raises(SafekeyError, match=r"report\.baseline 'nope'"):
        load_experiment(_write(tmp_path, {**BASE, "report": {"baseline": "nope"}}))
    with pytest.raises(SafekeyError, match="seeds must"):
        load_experiment(_write(tmp_path, {**BASE, "seeds": [1, 1]}))
    # overrides go through the same validation
    exp, _ = load_experiment(_write(tmp_path, BASE), ["seeds=[4,5]", "safety.judge=keyword"])
    assert exp.seeds == [4, 5] and exp.safety.judge == "keyword"
    p = subprocess.run([sys.executable, "-m", "safekey.cli.main", "run", str(_write(tmp_path, {**BASE, "launch": {"kind": "accelerate"}}))],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().endswith("launch.kind=accelerate needs launch.accelerate_config")
    assert "Traceback" not in p.stderr


def test_step_runner_failure_names_the_step_and_resumes(tmp_path):
    flag = tmp_path / "ok"
    first = tmp_path / "first.txt"
    steps = [Step("first", [sys.executable, "-c", f"open({str(first)!r}, 'w').write('1')"], [first], 1),
             Step("second", [sys.executable, "-c", f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 3)"],
                  [], 1)]
    log: list[str] = []
    with pytest.raises(SafekeyError, match=r"step second failed \(exit 3\); log .*second\.log"):
        StepRunner(tmp_path / "out", echo=log.append).run(steps)
    first.write_text("kept")  # a rerun must not redo the finished step
    flag.write_text("")
    log2: list[str] = []
    StepRunner(tmp_path / "out", echo=log2.append).run(steps)
    assert first.read_text() == "kept"
    assert any("resuming: 1 of 2" in line for line in log2)
    state = json.loads((tmp_path / "out" / "steps.json").read_text())
    assert set(state) == {"first", "second"}


@pytest.fixture(scope="module")
def experiment_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("exp")
    spec = {
        "name": "tiny", "model": str(tiny_model_dir), "offline": True, "train_data": "{starter}/train.jsonl",
        "train": {"epochs": 1, "max_length": 192, "limit": 8,
                  "set": {"effective_batch": 4, "per_device_batch": 4, "last_k_epochs": 1, "save_total_limit": 1}},
        # one variant × 2 seeds (the seed table needs 2; a second variant only repeated the same steps)
        "variants": [{"name": "safekey", "mode": "safekey"}],
        "seeds": [1, 2],
        "safety": {"bench_files": ["{starter}/heldout_harmful.jsonl", "{starter}/heldout_benign.jsonl"], "limit": "4",
                   "judge": "keyword", "max_new_tokens": 6, "batch_size": 8},
        "analyses": {"aha": True, "traces": "{starter}/heldout_traces.jsonl", "probe": True, "limit": 10},
        "report": {"baseline": "base"},
    }
    path = _write(tmp, spec)
    out = tmp / "out"
    r = CliRunner().invoke(cli, ["run", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out, path, r.output


def test_experiment_end_to_end(experiment_run):
    out, _, _ = experiment_run
    m = json.loads((out / "experiment.json").read_text())
    assert m["groups"] == {"base": ["base"], "safekey": ["safekey-s1", "safekey-s2"]}
    for run in ("safekey-s1", "safekey-s2"):
        cfg = yaml.safe_load((out / "train" / run / "train_config.yaml").read_text())
        assert cfg["seed"] == int(run[-1]) and cfg["mode"] == run.split("-")[0]
        summary = json.loads((out / "eval" / run / "summary.json").read_text())
        assert summary["label"] == run and summary["benchmarks"]["heldout_harmful"]["n"] == 4
    # seeds really differ (data order / init), so the seed spread is measured, not assumed
    from safetensors.torch import load_file

    w1, w2 = (load_file(str(out / "train" / f"safekey-s{i}" / "model.safetensors")) for i in (1, 2))
    assert any((w1[k] - w2[k]).abs().max() > 0 for k in w1)
    assert (out / "analysis" / "aha.json").exists() and (out / "analysis" / "probe.json").exists()
    html = (out / "report.html").read_text()
    assert 'id="seed-table"' in html and "safekey" in html
    md = CliRunner().invoke(cli, ["report", str(out), "--format", "md"])
    assert md.exit_code == 0 and "Across training seeds" in md.output and "| safekey | 2 |" in md.output
    # #36.5: one baseline convention — the text table takes the experiment's report.baseline, as the HTML does
    base_rows = [ln.split("|")[1].strip() for ln in md.output.splitlines() if "(baseline) |" in ln]
    assert len(base_rows) == 1 and base_rows[0] in html  # the same row is the baseline in both



def test_experiment_rerun_skips_finished_steps(experiment_run):
    out, path, _ = experiment_run
    before = (out / "eval" / "safekey-s1" / "summary.json").stat().st_mtime_ns
    r = CliRunner().invoke(cli, ["run", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    n_steps = len(json.loads((out / "steps.json").read_text()))
    assert f"resuming: {n_steps - 1} of {n_steps} steps already done" in r.output  # only the report reruns
    assert (out / "eval" / "safekey-s1" / "summary.json").stat().st_mtime_ns == before


@pytest.mark.multirank
@pytest.mark.slow
def test_experiment_torchrun_launch_trains_on_two_ranks(tmp_path, tiny_model_dir):
    spec = {**BASE, "model": str(tiny_model_dir), "offline": True, "include_base": False,
            "launch": {"kind": "torchrun", "nproc": 2, "env": {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}},
            "train": {"epochs": 1, "max_length": 192, "limit": 8,
                      "set": {"effective_batch": 4, "per_device_batch": 2, "last_k_epochs": 1, "save_total_limit": 1}}}
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["run", str(_write(tmp_path, spec)), "-o", str(out)])
    assert r.exit_code == 0, r.output
    stats = json.loads((out / "train" / "sft" / "train_stats.json").read_text())
    assert stats["world_size"] == 2


def test_demo_is_the_demo_preset_with_its_flags_as_overrides(tiny_model_dir):
    """One planner: `safekey demo`'s flags are --set overrides of the preset `safekey run demo` runs."""
    from safekey.demo import overrides

    sets = overrides(model=str(tiny_model_dir), epochs=2, train_limit=8, eval_limit=3, max_new_tokens=7, full=True,
                     analyses=True)
    exp, here = load_experiment("demo", sets)
    assert (exp.train.epochs, exp.train.limit, exp.safety.limit, exp.safety.max_new_tokens) == (2, 8, 3, 7)
    assert exp.train.lora is False
    steps, _ = plan_steps(exp, here, Path("/tmp/x"), str(tiny_model_dir))
    names = [s.name for s in steps]
    assert {"analyze-kl", "analyze-probe", "analyze-attention", "annotate-responses"} <= set(names)
    kl = next(s for s in steps if s.name == "analyze-kl").cmd
    assert kl[kl.index("kl") + 1] == "/tmp/x/eval/base/heldout_harmful/judged.jsonl"
    assert _train_cfg(next(s for s in steps if s.name == "train-sft")).get("lora") is None
    # the defaults are the preset as written: LoRA on the top layers, every held-out item
    plain, _ = plan_steps(*load_experiment("demo", overrides(model=str(tiny_model_dir))), Path("/tmp/x"), str(tiny_model_dir))
    assert _train_cfg(next(s for s in plain if s.name == "train-sft"))["lora"] is True
    assert "analyze-kl" not in [s.name for s in plain]


def test_annotate_beside_writes_next_to_each_input(tmp_path):
    from safekey.paths import resource

    runs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        text = resource("starter/heldout_traces.jsonl").read_text(encoding="utf-8").splitlines()[:3]
        (d / "judged.jsonl").write_text("\n".join(text + ['{"id": "x", "question": "q", "response": "no think here"}']) + "\n")
        runs.append(str(d / "judged.jsonl"))
    r = CliRunner().invoke(cli, ["annotate", *runs, "--beside", "--no-progress"])
    assert r.exit_code == 0, r.output
    for name in ("a", "b"):
        got = [json.loads(x) for x in (tmp_path / name / "judged.uk.jsonl").read_text().splitlines()]
        assert len(got) == 3 and all(g["k_end"] > g["u_end"] for g in got)  # the record without <think> is only counted
    r = CliRunner().invoke(cli, ["annotate", *runs, "-o", str(tmp_path / "o.jsonl")])
    assert isinstance(r.exception, SafekeyError) and "--beside" in str(r.exception)


def test_every_step_reads_its_stage_config_from_a_written_file(tmp_path, tiny_model_dir):
    """One config path (#25.3): train and reasoning steps get `--config FILE` with their stage's own keys,
    validated at planning (a typo fails in one line, not at the step), canonical benchmark names."""
    from safekey.config import load_config
    from safekey.evals.reasoning import ReasoningConfig
    from safekey.train.config import TrainConfig

    spec = _write(tmp_path, {**BASE, "train": {"epochs": 2, "lora": True, "set": {"lr": 1e-4}},
                             "variants": [{"name": "sk", "mode": "safekey", "set": {"head": False}}],
                             "reasoning": {"benches": ["MATH500", "humaneval"], "limit": "MATH500=2", "batch_size": 3,
                                           "max_new_tokens": 64}})
    exp, here = load_experiment(spec)
    steps, _ = plan_steps(exp, here, tmp_path / "out", str(tiny_model_dir))
    train = next(s for s in steps if s.name == "train-sk")
    (path, text), = train.writes.items()
    assert train.cmd[train.cmd.index("--config") + 1] == str(path) and path in train.inputs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    cfg = load_config(TrainConfig, path)
    assert (cfg.mode, cfg.epochs, cfg.lora, cfg.lr, cfg.head, cfg.seed) == ("safekey", 2, True, 1e-4, False, 2002)
    reasoning = next(s for s in steps if s.name == "reasoning-sk")
    (rpath, rtext), = reasoning.writes.items()
    rpath.write_text(rtext)
    rc = load_config(ReasoningConfig, rpath)
    assert rc.benchmarks == ["math500", "humaneval"] and rc.limit == {"math500": 2}
    assert rc.batch_size == 3 and rc.sampling.max_tokens == 64
    bad = _write(tmp_path, {**BASE, "train": {"set": {"lrr": 1e-4}}})
    with pytest.raises(SafekeyError, match=r"variant sft: train settings: lrr"):
        plan_steps(*load_experiment(bad), tmp_path / "out", str(tiny_model_dir))


def test_experiment_attacks_and_samples_reach_the_eval_config(tmp_path, tiny_model_dir):
    spec = _write(tmp_path, {**BASE, "safety": {
        "bench_files": ["{starter}/heldout_harmful.jsonl"], "attacks": ["none", "prefill-thinking"],
        "attack_settings": {"prefill-thinking": {"words": 5, "prefixes": "traces.jsonl"}}, "samples": 2, "temperature": 0.5}})
    steps, _ = plan_steps(*load_experiment(spec), tmp_path / "out", str(tiny_model_dir))
    ev = next(s for s in steps if s.name == "eval-base")
    (cfg,) = (yaml.safe_load(t) for t in ev.writes.values())
    assert cfg["attacks"] == ["none", "prefill-thinking"] and cfg["samples"] == 2
    assert cfg["attack_settings"]["prefill-thinking"] == {"words": 5, "prefixes": str(tmp_path / "traces.jsonl")}
    for bad, msg in (({"attacks": ["nosuch"]}, "unknown attack 'nosuch'"), ({"samples": 3}, "temperature > 0")):
        spec = _write(tmp_path, {**BASE, "safety": {"bench_files": ["{starter}/heldout_harmful.jsonl"], **bad}})
        with pytest.raises(SafekeyError, match=rf"safety: .*{msg}"):
            plan_steps(*load_experiment(spec), tmp_path / "out", str(tiny_model_dir))


def test_dpo_variants_get_a_pairs_step_made_with_the_base_model(tmp_path, tiny_model_dir):
    spec = _write(tmp_path, {**BASE, "variants": [{"name": "sft", "mode": "sft"}, {"name": "ipo", "mode": "dpo"}],
                             "pairs": {"judge": "keyword", "max_new_tokens": 128, "limit": 32}})
    steps, _ = plan_steps(*load_experiment(spec), tmp_path / "out", str(tiny_model_dir))
    names = [s.name for s in steps]
    assert names.index("pairs") < names.index("train-ipo")
    pairs = next(s for s in steps if s.name == "pairs")
    (cfg,) = (yaml.safe_load(t) for t in pairs.writes.values())
    assert cfg["policy"] == f"hf:{tiny_model_dir}" and cfg["max_new_tokens"] == 128 and pairs.cmd[-2:] == ["--limit", "32"]
    ipo = next(s for s in steps if s.name == "train-ipo")
    assert ipo.after == ["pairs"] and str(tmp_path / "out" / "data" / "pairs.jsonl") in ipo.cmd
    assert _train_cfg(ipo)["mode"] == "dpo" and "pairs" not in next(s for s in steps if s.name == "train-sft").after
    assert "ipo" in presets()  # the paper setup
    exp, _ = load_experiment("ipo")
    assert any(v.mode == "dpo" for v in exp.variants)


def test_every_method_in_one_experiment_with_reasoning_steps(shared, tmp_path, tiny_model_dir):
    """SFT, DPO (pairs the user brings) and SFT → GRPO from one experiment file: one table; and
    the reasoning steps run (the planner passed `eval reasoning` a --no-progress it did not have:
    every experiment with a reasoning section, the paper presets included, failed at that step)."""
    shared("math500/test.jsonl")
    from test_dpo import _pairs

    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(x) for x in _pairs(4)) + "\n")
    spec = _write(tmp_path, {
        "name": "r", "model": str(tiny_model_dir), "offline": True, "train_data": "{starter}/train.jsonl",
        "include_base": False,  # the base model's steps are the e2e fixture's (suite time)
        "variants": [{"name": "sft", "mode": "sft"}, {"name": "dpo", "mode": "dpo"},
                     {"name": "grpo", "mode": "grpo", "from_variant": "sft", "set": {"max_completion_length": 8}}],
        "pairs": {"file": "pairs.jsonl"},
        "train": {"epochs": 1, "max_length": 192, "limit": 4, "set": {"effective_batch": 4, "per_device_batch": 4}},
        "safety": {"bench_files": ["{starter}/heldout_harmful.jsonl"], "limit": 2, "max_new_tokens": 4, "batch_size": 4},
        "reasoning": {"benches": ["math500"], "limit": 1, "max_new_tokens": 4}})
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["run", str(spec), "-o", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("sft", "dpo", "grpo"):
        s = json.loads((out / "reasoning" / name / "summary.json").read_text())
        assert s["benchmarks"]["math500"]["n"] == 1 and s["label"] == name
    grpo_cfg = yaml.safe_load((out / "train" / "grpo" / "train_config.yaml").read_text())
    assert grpo_cfg["model"] == str(out / "train" / "sft")  # SFT → GRPO: started from the SFT model
    assert json.loads((out / "train" / "dpo" / "train_stats.json").read_text())["plan"]["mode"] == "dpo"
    md = CliRunner().invoke(cli, ["report", str(out / "eval"), "--format", "md", "--baseline", "sft"])
    assert md.exit_code == 0, md.output
    for name in ("sft (baseline)", "dpo", "grpo"):
        assert f"| {name} |" in md.output
    assert not (out / "eval" / "base").exists()
