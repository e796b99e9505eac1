"""Test doubles shipped with the package, so every stage can test its LLM calls offline.

Names are resolved lazily so ``python -m safekey.testing.fake_openai`` runs the module cleanly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALL_FAULTS", "DEFAULT_FAULTS", "FakeOpenAI", "LogEntry", "Refuse", "echo"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import fake_openai

        return getattr(fake_openai, name)
    raise AttributeError(name)
