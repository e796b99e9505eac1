"""What produced a result: recorded in every run.json / summary.json / train_stats.json.

Why: a table in a paper must be traceable to the exact code, command and weights. The command
line is stored as typed (credentials in URLs are redacted by the writer, never the key itself,
which only ever comes from the environment); the git commit is read from the checkout safekey
runs from, when there is one, with a ``+dirty`` mark for uncommitted changes.
"""

from __future__ import annotations

import functools
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD of the checkout holding this package (``…+dirty`` with local changes), else None."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                               text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance() -> dict[str, Any]:
    """{command, safekey_version, git_commit, python, torch, transformers} of this process."""
    from . import __version__

    out: dict[str, Any] = {"command": shlex.join(["safekey", *sys.argv[1:]]) if sys.argv else None,
                           "safekey_version": __version__, "git_commit": git_commit(),
                           "python": platform.python_version()}
    for mod in ("torch", "transformers"):
        m = sys.modules.get(mod)  # only what this process already imported: no heavy import for a version string
        out[mod] = getattr(m, "__version__", None) if m else None
    return out
