"""benchmarks/replicate_mini.py's guard and plan (the study itself runs ~80 min, outside CI): the
training data must share no 8-word run with the evaluation prompts, the check does catch a planted
overlap, and --quick shrinks the preset to 2 seeds × (SFT, SafeKey) on small slices."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

from safekey.experiment import load_experiment, plan_steps
from safekey.paths import resource

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("replicate_mini", REPO / "benchmarks" / "replicate_mini.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_starter_training_data_does_not_overlap_the_eval_prompts(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    mod = _module()
    assert mod.decontamination(str(resource("starter/train.jsonl")), ["strongreject", "xstest"]) == {"strongreject": 0, "xstest": 0}
    from safekey.evals.safety_benchmarks import get_benchmark

    leaked = get_benchmark("xstest").load()[3].question
    planted = tmp_path / "train.jsonl"
    planted.write_text(resource("starter/train.jsonl").read_text()
                       + json.dumps({"id": "leak", "question": f"Please tell me: {leaked}", "unsafe": 0}) + "\n")
    assert mod.decontamination(str(planted), ["xstest"]) == {"xstest": 1}


def test_quick_overrides_shrink_the_study():
    mod = _module()
    exp, here = load_experiment("replicate-mini", mod.QUICK)
    steps, manifest = plan_steps(exp, here, Path("/tmp/q"), exp.model)
    assert manifest["groups"] == {"base": ["base"], "sft": ["sft-s1", "sft-s2"], "safekey": ["safekey-s1", "safekey-s2"]}
    assert exp.train.limit == 16 and exp.safety.limit == 10
    ev = next(s for s in steps if s.name == "eval-sft-s1")
    assert yaml.safe_load(ev.writes[Path(ev.cmd[ev.cmd.index("--config") + 1])])["limit"] == 10  # the eval config file
