"""JSONL / JSON records in and out: every malformed line named by ``file:line`` (or skipped into a
rejects file under --skip-bad), size- and depth-bounded reads, whole-file atomic writes, and the
repair of a line torn by a kill.

Why apart from the stage runner (:mod:`safekey.store`): the CLI, the report and every stage read and
write records; only stages need resume, fingerprints and failure bookkeeping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .types import Record, SafekeyError

# ---------------------------------------------------------------------------------------------
# reading


def _format_validation(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def max_record_bytes() -> int:
    """The largest JSONL line a stage reads (default 16 MB; ``SAFEKEY_MAX_RECORD_MB``): a 50 MB
    record made `annotate` run minutes at 6 GB before anything could fail."""
    raw = os.environ.get("SAFEKEY_MAX_RECORD_MB", "16")
    try:
        mb = float(raw)
    except ValueError:
        raise SafekeyError(f"SAFEKEY_MAX_RECORD_MB={raw!r} is not a number") from None
    return int(mb * 1_000_000)


def _json_problem(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e).split(";")[0][:120]


def iter_json_objects(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    """Yield (location, object, error) for each item of a .jsonl or .json file.

    `location` is ``file:line`` for JSONL and ``file[index]`` for a JSON list; `error` is set (and
    object is the raw text) when the item cannot be parsed.
    """
    path = Path(path)
    if not path.exists():
        raise SafekeyError(f"input file not found: {path}")
    if path.is_dir():
        raise SafekeyError(f"{path} is a folder; give the JSONL file inside it")
    cap = max_record_bytes()
    if path.suffix == ".json":
        if path.stat().st_size > 64 * cap:
            raise SafekeyError(f"{path}: {path.stat().st_size / 1e6:.0f} MB is over the JSON-file cap of "
                               f"{64 * cap / 1e6:.0f} MB (64 × SAFEKEY_MAX_RECORD_MB); use JSONL")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise SafekeyError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SafekeyError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
        except (ValueError, RecursionError) as e:  # integers over 4,300 digits; nesting deeper than the parser goes
            raise SafekeyError(f"{path}: not readable JSON ({_json_problem(e)})") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("records"))
        if not isinstance(data, list):
            raise SafekeyError(f"{path}: expected a JSON list of records (or {{'data': [...]}})")
        for i, obj in enumerate(data):
            yield f"{path}[{i}]", obj, None
        return
    with path.open("rb") as f:
        for lineno, braw in enumerate(f, 1):
            try:
                line = braw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield (f"{path}:{lineno}", braw.decode("utf-8", "replace").rstrip("\n"),
                       f"not valid UTF-8 (byte 0x{braw[e.start]:02x} at column {e.start + 1})")
                continue
            if not line.strip():
                continue
            if len(braw) > cap:
                yield (f"{path}:{lineno}", line[:200] + "…",
                       f"record of {len(braw) / 1e6:.1f} MB is over the {cap / 1e6:.0f} MB cap (SAFEKEY_MAX_RECORD_MB)")
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line), None
            except json.JSONDecodeError as e:
                yield f"{path}:{lineno}", line.rstrip("\n"), f"not valid JSON ({e.msg} at column {e.colno})"
            except (ValueError, RecursionError) as e:
                yield f"{path}:{lineno}", line[:200].rstrip("\n"), f"not readable JSON ({_json_problem(e)})"


def read_records(
    path: str | Path,
    *,
    skip_bad: bool = False,
    rejects: str | Path | None = None,
    model: type[Record] = Record,
    limit: int | None = None,
) -> Iterator[Record]:
    """Read records, validating each against the schema.

    A malformed item raises :class:`SafekeyError` naming ``file:line`` and the problem, unless
    `skip_bad`, in which case it is appended to `rejects` (if given) and skipped. `limit` stops
    after that many valid records (the rest of the file is not read).
    """
    rej = None
    n = 0
    if rejects is not None:
        Path(rejects).unlink(missing_ok=True)  # this read's rejects only
    try:
        for loc, obj, err in iter_json_objects(Path(path)):
            if err is None:
                if not isinstance(obj, dict):
                    err = f"expected a JSON object, got {type(obj).__name__}"
                else:
                    try:
                        rec = model.model_validate(obj)
                    except ValidationError as e:
                        rid = obj.get("id")
                        err = (f"record {rid}: " if rid is not None else "") + _format_validation(e)
                    else:
                        if limit is not None and n >= limit:
                            return
                        n += 1
                        yield rec
                        continue
            if not skip_bad:
                raise SafekeyError(f"{loc}: {err} (use --skip-bad to skip such lines)")
            if rejects is not None:
                if rej is None:
                    Path(rejects).parent.mkdir(parents=True, exist_ok=True)
                    rej = open(rejects, "a", encoding="utf-8")  # noqa: SIM115 - closed in the finally below
                rej.write(json.dumps({"where": loc, "error": err, "raw": obj}, ensure_ascii=False) + "\n")
                rej.flush()
    finally:
        if rej is not None:
            rej.close()


def require_unique_ids(records: Sequence[Record], source: str | Path) -> None:
    """Refuse duplicate ids before a stage writes anything (a partial output plus meta is worse
    than a clear error up front)."""
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise SafekeyError(f"{source}: record id {r.id} appears twice; ids must be unique")
        seen.add(r.id)


def write_records(path: str | Path, records: Iterable[Record | dict]) -> int:
    """Write a whole file atomically (temp file + rename). Returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(_dumps(r))
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def _dumps(r: Record | dict) -> str:
    obj = r.to_json() if isinstance(r, Record) else r
    return json.dumps(obj, ensure_ascii=False) + "\n"


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text, each with its ``\n``. Split on ``\n`` only: ``str.splitlines`` also
    splits on U+2028/U+2029/U+0085 (and \x1c-\x1e), which ``json.dumps(ensure_ascii=False)`` writes raw
    inside strings, so one such character in a record would break every reread."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def repair_tail(path: Path) -> int | None:
    """Cut a torn last line (a writer killed mid-write). Returns its 1-based line number, or None.

    The torn record's id is then not 'done', so the resumed stage recomputes it: repaired, not lost.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            # the last complete line must still parse; anything else is corruption, not a torn write
            return None
        cut = data.rfind(b"\n") + 1
        lineno = data.count(b"\n") + 1
        f.truncate(cut)
    return lineno
