"""The solvers by name: adding one = one file with its class + one line here (`--attack`'s help
and `safekey doctor` read this table)."""

from __future__ import annotations

from typing import Any

from ...types import SafekeyError
from .base import Solver
from .crescendo import Crescendo
from .generate import Generate
from .pair import Pair, Tap
from .prefill import CotHijack, CotHijackPrefill, PrefillAnswer, PrefillThinking

SOLVERS: dict[str, type[Solver]] = {
    "none": Generate,
    "prefill-answer": PrefillAnswer,
    "prefill-thinking": PrefillThinking,
    "cot-hijack": CotHijack,
    "cot-hijack-prefill": CotHijackPrefill,
    "pair": Pair,
    "tap": Tap,
    "crescendo": Crescendo,
}


def solver_help() -> str:
    return "; ".join(f"{n}: {c.help}" for n, c in SOLVERS.items())


def resolved_settings(name: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every setting of the attack `name` with its default filled in and `given` applied: what a run
    with these settings uses (``eval safety --print-config``, ``safekey run --dry-run``)."""
    import inspect

    cls = SOLVERS.get(name.strip())
    if cls is None:
        raise SafekeyError(f"unknown attack {name!r}; use one of {', '.join(SOLVERS)}")
    params = inspect.signature(cls.__init__).parameters
    out = {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}
    unknown = [k for k in (given or {}) if k not in out]
    if unknown:
        raise SafekeyError(f"attack_settings.{name}: unknown setting {unknown[0]!r}; it has {', '.join(out)}")
    return {**out, **(given or {})}


def make_solver(name: str, **settings: Any) -> Solver:
    cls = SOLVERS.get(name.strip())
    if cls is None:
        raise SafekeyError(f"unknown attack {name!r}; use one of {', '.join(SOLVERS)}")
    try:
        return cls(**settings)
    except TypeError as e:  # an unknown setting: one line naming it
        raise SafekeyError(f"attack_settings.{name}: {e}") from None
