"""The wheel is complete (issue #36.8): built from a copy of the sources, installed into a fresh
virtual environment (without the editable checkout on its path), it answers `safekey demo --help`,
lists its presets and runs one offline evaluation on its packaged starter data — every template,
prompt file and resource a run reads travels inside it. The third-party packages come from this
suite's environment (a path entry, not a reinstall: the point is safekey's own files, and the
registry is not needed for that); the ranges in pyproject.toml are checked against constraints.txt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ranges_admit_the_tested_set():
    """Every pyproject requirement is a range that the tested version (constraints.txt) satisfies."""
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    tested = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            tested[name.lower().replace("_", "-")] = ver
    for d in deps:
        req = Requirement(d)
        assert not any(s.operator == "==" for s in req.specifier), f"{d}: a pin, not a range"
        ver = tested[req.name.lower().replace("_", "-")]
        assert req.specifier.contains(ver, prereleases=True), f"{d} does not admit the tested {ver}"


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_offline(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = list(dist.glob("safekey-*.whl"))
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies, as a plain path entry: the editable checkout's finder (.pth inside it) is not run
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"

    def sk(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "safekey"), *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path, env=env)

    where = subprocess.run([str(py), "-c", "import safekey; print(safekey.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path, env=env)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr  # the wheel's copy, not the checkout
    r = sk("demo", "--help")
    assert r.returncode == 0 and "demo" in r.stdout, r.stderr
    r = sk("run", "--list")
    assert r.returncode == 0 and "recap" in r.stdout and "cost:" in r.stdout, r.stderr
    starter = site / "safekey" / "resources" / "starter"
    r = sk("eval", "safety", "--model", "hf:tiny-random", "--bench-file", str(starter / "heldout_harmful.jsonl"),
           "--limit", "2", "--max-new-tokens", "4", "--attack", "none,prefill-thinking,cot-hijack", "--judge", "keyword",
           "--no-progress", "-o", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(s["benchmarks"]) == {"heldout_harmful", "heldout_harmful@prefill-thinking", "heldout_harmful@cot-hijack"}
