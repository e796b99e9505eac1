"""Solvers: how an item becomes the evaluated model's response (plain generation, attacks)."""

from .base import Solver, Target, respond, with_fields
from .generate import Generate
from .registry import SOLVERS, make_solver, solver_help

__all__ = ["SOLVERS", "Generate", "Solver", "Target", "make_solver", "respond", "solver_help", "with_fields"]
