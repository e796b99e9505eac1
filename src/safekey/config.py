"""Config: YAML files + ``key.sub=value`` CLI overrides, validated by pydantic models.

Each stage defines its own pydantic model; this module only loads, overrides, validates,
fingerprints and dumps. Every run writes its resolved config next to its outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .types import SafekeyError

T = TypeVar("T", bound=BaseModel)


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        nxt = d.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise SafekeyError(f"override {dotted!r}: {k!r} is not a section")
        d = nxt
    d[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=3`` → ("a.b", 3). The value is parsed as YAML, so ``true``, ``[1,2]``, ``0.5`` work."""
    if "=" not in text:
        raise SafekeyError(f"override {text!r} must look like key=value (e.g. train.lr=2e-5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise SafekeyError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    **values: Any,
) -> T:
    """Build a validated config: defaults ← YAML file ← keyword values (None ignored) ← overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise SafekeyError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise SafekeyError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise SafekeyError(f"{p}: a config file must be a mapping")
        data.update(loaded)
    for k, v in values.items():
        if v is not None:
            _set_path(data, k, v)
    for ov in overrides:
        k, v = parse_override(ov)
        _set_path(data, k, v)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")  # a model-level check names its own fields
            lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
        src = f" ({path})" if path else ""
        raise SafekeyError(f"invalid {cls.__name__} config{src}:\n" + "\n".join(lines)) from None


def to_plain(cfg: Any) -> Any:
    return cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg


def fingerprint(obj: Any) -> str:
    """A stable hash of a config (sorted JSON), used to refuse mixing outputs of different configs."""
    blob = json.dumps(to_plain(obj), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def dump_yaml(cfg: Any, path: str | Path) -> Path:
    from .atomic import write_text_atomic
    from .redact import redact_obj

    path = Path(path)
    write_text_atomic(path, yaml.safe_dump(redact_obj(to_plain(cfg)), sort_keys=False, allow_unicode=True))
    return path
