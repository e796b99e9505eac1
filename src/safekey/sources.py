"""Load a table of rows from a local file, a URL, or a Hugging Face hub id.

Every dataset loader in safekey keeps its canonical hub id / URL *and* accepts a local path, so the
same code runs on a GPU box with hub access and offline here (where hub calls fail fast because
tests set ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

from .paths import home
from .types import SafekeyError

LOCAL_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet", ".gz", ".tsv")


def _read_local(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    name = path.name.lower()
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if name.endswith(".jsonl"):
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if name.endswith(".json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = data.get("data", data.get("rows", data))
        if not isinstance(data, list):
            raise SafekeyError(f"{path}: expected a JSON list of rows")
        return data
    if name.endswith(".csv") or name.endswith(".tsv"):
        # keep_default_na=False: an empty cell is "", never NaN (prompts must stay strings)
        df = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", keep_default_na=False, dtype=str)
        return df.to_dict(orient="records")
    if name.endswith(".parquet"):
        return pd.read_parquet(path).to_dict(orient="records")
    raise SafekeyError(f"{path}: unsupported file type (use one of {', '.join(LOCAL_SUFFIXES)})")


def _download(url: str) -> Path:
    dest = home() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / Path(url.split("?")[0]).name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                data = r.read()
        except OSError as e:
            raise SafekeyError(f"could not download {url}: {e}") from None
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(dest)
    return dest


def load_table(
    source: str | Path,
    *,
    split: str | None = None,
    config: str | None = None,
    data_files: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of a dataset as dicts.

    `source` may be a local file, an http(s) URL to such a file, or a hub dataset id
    (``org/name``; `config`, `split`, `data_files` are passed to ``datasets.load_dataset``).
    """
    s = str(source)
    p = Path(s).expanduser()
    if p.exists():
        if p.is_dir():
            raise SafekeyError(f"{p} is a folder; give the data file inside it")
        return _read_local(p)
    if s.startswith(("http://", "https://")):
        dest = _download(s)
        try:
            return _read_local(dest)
        except Exception as e:  # an error page or a truncated file: drop it so the next run downloads again
            dest.unlink(missing_ok=True)
            raise SafekeyError(f"{s}: the downloaded file is not a readable {dest.suffix or 'table'} "
                               f"({type(e).__name__}: {str(e)[:200]})") from None
    if s.lower().endswith(LOCAL_SUFFIXES) or s.startswith((".", "/", "~")):
        raise SafekeyError(f"data file not found: {s}")
    try:
        import datasets

        ds = datasets.load_dataset(s, config, split=split or "train", data_files=data_files)
    except Exception as e:  # the hub is unreachable offline; say so plainly
        raise SafekeyError(
            f"could not load hub dataset {s!r} ({type(e).__name__}: {str(e)[:200]}); "
            "offline, pass a local file path instead"
        ) from None
    return [dict(r) for r in ds]


def read_text_source(source: str | Path) -> str:
    """The text of a local file or URL (prompt templates, rubrics)."""
    s = str(source)
    if Path(s).exists():
        return Path(s).read_text(encoding="utf-8")
    if s.startswith(("http://", "https://")):
        return _download(s).read_text(encoding="utf-8")
    raise SafekeyError(f"text file not found: {s}")


__all__ = ["load_table", "read_text_source"]
