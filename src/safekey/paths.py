"""Where things live: the shared real data, the model cache, run folders.

`SAFEKEY_DATA_DIR` points at the real datasets (default: ``../shared/data`` beside the checkout
when present). `SAFEKEY_HOME` holds converted models and caches (default ``~/.cache/safekey``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .types import SafekeyError

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir(required: bool = False) -> Path | None:
    """The folder with the shared real datasets, or None when it is not on this machine."""
    env = os.environ.get("SAFEKEY_DATA_DIR")
    candidates = [Path(env)] if env else [REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    if required:
        where = env or " or ".join(str(c) for c in candidates)
        raise SafekeyError(f"shared data folder not found ({where}); set SAFEKEY_DATA_DIR")
    return None


def data_file(rel: str) -> Path:
    """A file under the shared data folder; a clear error if it is missing."""
    d = data_dir(required=True)
    p = d / rel
    if not p.exists():
        raise SafekeyError(f"{p} not found in the shared data folder")
    return p


def home() -> Path:
    p = Path(os.environ.get("SAFEKEY_HOME", Path.home() / ".cache" / "safekey"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def resource(rel: str) -> Path:
    """A file shipped inside the package (prompts, policies, starter data)."""
    return Path(__file__).resolve().parent / "resources" / rel


# ---------------------------------------------------------------------------------------------
# names and outputs that must never become a way out of (or into) a run's files

_UNSAFE_NAME = __import__("re").compile(r"[^A-Za-z0-9_.-]+")


def safe_name(name: object, *, what: str = "name") -> str:
    """`name` (read from an input file: a benchmark, a label) as one path component, or a one-line
    error. A summary.json naming a benchmark ``../x`` or ``/etc`` must not move an output."""
    s = str(name)
    if not s or s in (".", "..") or s.startswith(".") or "/" in s or "\\" in s or "\0" in s or len(s) > 200:
        raise SafekeyError(f"{what} {s!r} is not a plain name (no '/', no leading '.'); refusing to use it as a path")
    return s


def name_from_stem(stem: str, default: str = "custom") -> str:
    """A path-safe folder name made from a file's stem (``...jsonl`` → ``custom``, not ``..``)."""
    s = _UNSAFE_NAME.sub("_", stem).lstrip(".")
    return s or default


def refuse_output_in_inputs(out: str | Path, inputs: list[str | Path], *, own_marker: str | None = None,
                            own_suffixes: tuple[str, ...] = ()) -> None:
    """One line (exit 2) when an output would destroy an input: the output *is* an input file, an
    input is one of the output's side files (``OUT.stats.json``, ``OUT.removed.jsonl`` …), an input
    lies inside the output folder, or the output is an existing file inside an input folder (a run's
    own files) that this command did not write before: its own outputs carry `own_marker` (e.g.
    ``<meta name="generator" content="safekey report">``) or end with one of `own_suffixes`."""
    o = Path(out).expanduser().resolve()
    stem = o.name[: -len(".jsonl")] if o.name.endswith(".jsonl") else o.stem
    for i in inputs:
        ip = Path(i).expanduser()
        if not ip.exists():
            continue
        ip = ip.resolve()
        if o == ip:
            raise SafekeyError(f"output {out} is also an input; write to another path")
        if ip.is_file() and ip.parent == o.parent and ip.name.startswith(stem + "."):
            raise SafekeyError(f"input {i} is a side file of the output {out} (it would be replaced); write to another path")
        if ip.is_file() and o in ip.parents:
            raise SafekeyError(f"output {out} would hold (and replace) the input {i}; write to another path")
        if ip.is_dir() and ip in o.parents and o.exists():
            mine = o.is_file() and o.suffix in own_suffixes
            if own_marker is not None and o.is_file():
                with o.open("rb") as f:
                    mine = own_marker.encode() in f.read(4096)
            if not mine:
                raise SafekeyError(f"output {out} is a file of the input run {i}; write to another path")
