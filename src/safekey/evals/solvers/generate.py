"""The plain solver: the model answers the item as written (its own prefill, if the benchmark has one)."""

from __future__ import annotations

from typing import Any

from ...store import Failure
from ...types import Record
from .base import Solver, Target, respond


class Generate(Solver):
    name = "none"
    help = "no attack: the prompt as the benchmark wrote it"

    def fingerprint(self) -> dict[str, Any]:
        return {}  # the generation fingerprint of every run made before solvers existed: their resumes stay valid

    def solve(self, batch: list[Record], target: Target) -> list[Record | Failure]:
        return respond(target, batch)
