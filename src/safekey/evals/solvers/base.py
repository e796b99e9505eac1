"""What a solver is: the step that turns a benchmark item into the evaluated model's response.

Why a noun of its own: plain generation and every attack (a prefilled thought, a rewritten prompt,
a multi-turn conversation) differ only in how the response is obtained; the dataset, the judge and
the metrics stay the same. A solver gets a batch of items and the :class:`Target` (the evaluated
model and its sampling) and returns, per item, the record with its response fields — or a
:class:`~safekey.store.Failure`, which the runner retries on the next run.

Every solver writes the same response fields, so every scorer reads them the same way:
``generation`` (the model's own text), ``response`` (prefix the model was given + its own text),
``finish_reason``, ``completion_tokens``, ``prompt_opens_think`` and ``truncation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...llm import ChatRequest, Sampling, prompt_opens_think
from ...store import Failure
from ...types import Record, truncation


@dataclass
class Target:
    """The evaluated model as a solver sees it: a backend, and the sampling of each item (a
    multi-sample run gives every sample its own seed)."""

    backend: Any
    sampling: Callable[[Record], Sampling]
    keep_response: bool = True  # False: no ``response`` copy (reasoning runs; the prefix is always empty there)
    judge: Any = None  # the run's judge: an adaptive attack's stop signal
    workdir: Path | None = None  # the task's folder (set by the runner): where attack transcripts live
    run_key: str | None = None  # the task's generation fingerprint (set by the runner): transcripts are kept under it


def with_fields(r: Record, **fields: Any) -> Record:
    """`r` plus `fields`, validated again (a solver never returns a half-built record)."""
    return Record.model_validate({**r.to_json(), **fields})


def respond(target: Target, batch: Sequence[Record], prefills: Sequence[str | None] | None = None,
            messages: Sequence[list[dict[str, str]]] | None = None) -> list[Record | Failure]:
    """One model call per item: its messages (or `messages`), the assistant turn opened with its
    prefill. The prefill is part of ``response`` (what a judge of the whole turn reads) and never
    of ``generation`` (what the model wrote itself)."""
    prefills_given = prefills is not None
    prefills = list(prefills) if prefills is not None else [getattr(r, "prefill", None) for r in batch]
    msgs = list(messages) if messages is not None else [r.prompt_messages() for r in batch]
    reqs = [ChatRequest(messages=m, sampling=target.sampling(r), prefill=p, id=r.id) for r, m, p in zip(batch, msgs, prefills)]
    comps = target.backend.generate(reqs)
    out: list[Record | Failure] = []
    for r, m, p, c in zip(batch, msgs, prefills, comps):
        if c.error is not None:
            out.append(Failure(r.id, f"generation failed: {c.error}"))
            continue
        opens = prompt_opens_think(target.backend, m)
        response = (p or "") + c.text
        fields: dict[str, Any] = {}
        if messages is not None:  # what the model was actually sent (the judge still sees the item's request)
            fields["attack_messages"] = m
        if prefills_given and p:  # the attacker's opening of the turn: recorded, never judged as the model's
            fields["attack_prefill"] = p
        fields["generation"] = c.text
        if target.keep_response:
            fields["response"] = response
        fields.update(finish_reason=c.finish_reason, completion_tokens=c.completion_tokens, prompt_opens_think=opens,
                      truncation=truncation(response, prompt_opens_think=opens, finish_reason=c.finish_reason))
        out.append(with_fields(r, **fields))
    return out


class Solver:
    """Base class. `name` is what ``--attack``/``--solver`` and the run folder call it; `help` is
    its line in the CLI help (both from the registry)."""

    name: ClassVar[str] = "generate"
    help: ClassVar[str] = ""

    def fingerprint(self) -> dict[str, Any]:
        """What, beside the model and the dataset, determines the responses (part of the
        generation stage's fingerprint: a changed setting regenerates, never reuses)."""
        return {"solver": self.name}

    def solve(self, batch: list[Record], target: Target) -> list[Record | Failure]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the solver opened (an attacker model); called once, after the run's last task."""
        return None


__all__ = ["Solver", "Target", "respond", "with_fields"]
