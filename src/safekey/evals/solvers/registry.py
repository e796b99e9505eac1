"""The solvers by name: adding one = one file with its class + one line here (`--attack`'s help
and `safekey doctor` read this table)."""

from __future__ import annotations

from typing import Any

from ...types import SafekeyError
from .base import Solver
from .crescendo import Crescendo
from .generate import Generate
from .pair import Pair, Tap
from .prefill import CotHijack, PrefillAnswer, PrefillThinking

SOLVERS: dict[str, type[Solver]] = {
    "none": Generate,
    "prefill-answer": PrefillAnswer,
    "prefill-thinking": PrefillThinking,
    "cot-hijack": CotHijack,
    "pair": Pair,
    "tap": Tap,
    "crescendo": Crescendo,
}


def solver_help() -> str:
    return "; ".join(f"{n}: {c.help}" for n, c in SOLVERS.items())


def make_solver(name: str, **settings: Any) -> Solver:
    cls = SOLVERS.get(name.strip())
    if cls is None:
        raise SafekeyError(f"unknown attack {name!r}; use one of {', '.join(SOLVERS)}")
    try:
        return cls(**settings)
    except TypeError as e:  # an unknown setting: one line naming it
        raise SafekeyError(f"attack_settings.{name}: {e}") from None
