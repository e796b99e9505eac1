"""U/K labellers behind one interface.

Span convention (agreed with training; keep exactly): ``u_end`` and ``k_end`` are character offsets
into ``response``. U = ``response[len("<think>\\n"):u_end]`` (the opening understanding sentences),
K = ``response[u_end:k_end]`` with leading whitespace stripped (the key sentence right after U),
and always ``0 < u_end < k_end <= response.index("\\n</think>")``.

Two labellers pick *how many opening sentences* form U; everything else (segmentation, offsets,
``k_text``, ``k_is_safety``, per-record failures) is shared, so both obey the convention by
construction:

* ``heuristic`` — no model: U = the first sentence plus following sentences that keep restating or
  interpreting the request (opened as "The user…/They…", or mostly the question's own words);
  the first sentence that evaluates, plans, recalls policy or starts solving is K.
* ``llm`` — any backend of ``safekey.llm``: the model sees the numbered opening sentences and
  returns the number of the last U sentence as JSON; invalid replies fall back to the heuristic
  with a counted reason.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..sentences import Sentence, iter_sentences
from ..store import Failure
from ..types import Record
from . import lexicon as lx

THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>"
MAX_U_SENTENCES = 8  # U is "usually 1–2 sentences"; a longer run means the rules misfired


@dataclass
class Trace:
    """A record's thinking, segmented lazily (pysbd is the slow part; U+K sit at the very start)."""

    record: Record
    question: str
    thinking: str
    _it: Iterator[Sentence] = field(repr=False, default=None)  # type: ignore[assignment]
    _got: list[Sentence] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._it = iter_sentences(self.thinking, question=self.question)

    def sentences(self, n: int) -> list[Sentence]:
        """The first `n` sentences (fewer if the thinking has fewer)."""
        if len(self._got) < n:
            self._got.extend(itertools.islice(self._it, n - len(self._got)))
        return self._got[:n]


@dataclass
class UKLabel:
    u_sentences: int  # how many opening sentences form U (>= 1)
    k_is_safety: bool | None = None  # None: decide with the lexicon
    fallback: str | None = None  # why the llm labeller fell back to the heuristic


def question_text(rec: Record) -> str:
    """The request the trace restates: `question`, else the last user turn of `messages`."""
    if rec.question:
        return rec.question
    for m in reversed(rec.messages or []):
        if m.role == "user":
            return m.content
    return ""


def prepare(rec: Record) -> Trace | Failure:
    """The record's thinking, or a Failure naming why it has none usable."""
    resp = rec.response
    if not resp:
        return Failure(rec.id, "no_response: record has no 'response' field")
    if not resp.startswith(THINK_OPEN):
        return Failure(rec.id, "no_thinking: response does not start with '<think>\\n'", raw=resp[:200])
    close = resp.find(THINK_CLOSE, len(THINK_OPEN) - 1)
    if close < 0:
        return Failure(rec.id, "no_thinking: no '\\n</think>' closes the thinking", raw=resp[:200])
    thinking = resp[len(THINK_OPEN) : close]
    if not thinking.strip():
        return Failure(rec.id, "empty_thinking: nothing between <think> and </think>")
    return Trace(rec, question_text(rec), thinking)


def finish(trace: Trace, label: UKLabel, labeller: str) -> Record | Failure:
    """Turn "U = the first n sentences" into the record fields of the span convention."""
    rec = trace.record
    sents = trace.sentences(label.u_sentences + 1)
    if len(sents) < label.u_sentences + 1:
        return Failure(rec.id, f"too_few_sentences: need {label.u_sentences + 1}, thinking has {len(sents)}")
    base = len(THINK_OPEN)
    u_end = base + sents[label.u_sentences - 1].end
    k_end = base + sents[label.u_sentences].end
    resp = rec.response or ""
    k_text = resp[u_end:k_end].lstrip()
    if not 0 < u_end < k_end <= resp.index(THINK_CLOSE):  # holds by construction; never write a bad span
        raise RuntimeError(f"record {rec.id}: span convention broken (u_end={u_end}, k_end={k_end})")
    k_is_safety = lx.is_safety(k_text) if label.k_is_safety is None else label.k_is_safety
    extra: dict[str, Any] = {
        "u_end": u_end,
        "k_end": k_end,
        "k_text": k_text,
        "k_is_safety": k_is_safety,
        "u_sentences": label.u_sentences,
        "uk_labeller": labeller,
    }
    if label.fallback:
        extra["uk_fallback"] = label.fallback
    data = rec.model_dump(mode="json", exclude_none=True)
    data.pop("uk_fallback", None)
    data.update(extra)
    return Record.model_validate(data)


# ------------------------------------------------------------------------------------------------
# heuristic


def _continues_u(sent: str, qwords: set[str]) -> bool:
    """Does this sentence still restate/interpret the request (U), rather than react to it (K)?"""
    s = lx.strip_discourse(sent)
    words = lx.content_words(s)
    overlap = len(words & qwords) / len(words) if words else 0.0
    if lx.READING_META.match(s):
        return True
    if lx.RESTATE_OPENERS.match(s):
        # "The user's intent is clearly harmful" judges; "They want X, Y and Z" restates
        return not (lx.EVALUATIVE.search(s) and overlap < 0.5)
    if lx.TURN_OPENERS.match(s):
        # "But I remember that the salon has been shut down…" can still mostly repeat the request
        return overlap >= 0.75 and len(words) >= 4 and s.lower().startswith("but ")
    return overlap >= 0.6 and len(words) >= 3


def heuristic_u_sentences(trace: Trace, max_u: int = MAX_U_SENTENCES) -> int | Failure:
    """Number of opening sentences that form U (the sentence after them is K)."""
    sents = trace.sentences(2)
    if len(sents) < 2:
        return Failure(trace.record.id, "single_sentence: the thinking has one sentence, so there is no K")
    qwords = lx.content_words(trace.question)
    n = 1
    while n < max_u:
        nxt = trace.sentences(n + 2)
        if len(nxt) < n + 2:  # sentence n would be the last one: it has to be K
            break
        if not _continues_u(nxt[n].text, qwords):
            break
        n += 1
    return n


class HeuristicLabeller:
    name = "heuristic"

    def __init__(self, max_u: int = MAX_U_SENTENCES):
        self.max_u = max_u

    def label(self, records: Sequence[Record]) -> list[Record | Failure]:
        out: list[Record | Failure] = []
        for rec in records:
            tr = prepare(rec)
            if isinstance(tr, Failure):
                out.append(tr)
                continue
            n = heuristic_u_sentences(tr, self.max_u)
            out.append(n if isinstance(n, Failure) else finish(tr, UKLabel(n), self.name))
        return out


# ------------------------------------------------------------------------------------------------
# llm

LLM_SYSTEM = (
    "You annotate the reasoning traces of an AI assistant. A trace opens with the assistant's "
    "understanding of the user's request: one or more sentences that restate or interpret what the "
    "user asks. The sentence right after that is the key sentence: the assistant's first own "
    "reaction, plan or judgement. Reply with JSON only."
)
LLM_USER = """User request:
<<<
{question}
>>>

Opening sentences of the assistant's reasoning, numbered:
{numbered}

Which sentence is the LAST one that still restates or interprets the user's request? It must be a
number from 1 to {last_allowed}; the sentence after it is the key sentence.
Also say whether the key sentence voices a safety concern or invokes a safety policy.
Reply with exactly: {{"last_understanding_sentence": <number>, "key_sentence_is_safety": <true|false>}}"""


class LLMChoice(BaseModel):
    """The model's answer; the index range is checked against the trace afterwards."""

    model_config = ConfigDict(extra="ignore")
    last_understanding_sentence: int
    key_sentence_is_safety: bool | None = None


class LLMLabeller:
    """Asks a backend for the last U sentence. An unusable reply (failed call, unparseable, index
    out of range) is a failure — written to the failures file and retried on the next run — unless
    the user opted into ``fallback="heuristic"``; then the heuristic labels it, the reason is kept on
    the record (``uk_fallback``) and counted in the stats. Why not fall back silently: an unreachable
    API used to produce "annotated 3/3" from the heuristic, and a rerun never asked the model."""

    name = "llm"

    def __init__(
        self,
        backend: Any,
        *,
        n_sentences: int = 10,
        max_tokens: int = 64,
        use_llm_safety: bool = False,
        max_u: int = MAX_U_SENTENCES,
        fallback: str | None = None,
    ):
        self.backend = backend
        self.fallback = fallback
        self.n_sentences = n_sentences
        self.max_tokens = max_tokens
        self.use_llm_safety = use_llm_safety
        self.max_u = max_u
        self.fallbacks: collections.Counter[str] = collections.Counter()

    def request(self, trace: Trace) -> tuple[Any, int]:
        from ..llm import ChatRequest, Sampling

        sents = trace.sentences(self.n_sentences)
        numbered = "\n".join(f"{i}. {' '.join(s.text.split())}" for i, s in enumerate(sents, 1))
        user = LLM_USER.format(question=trace.question.strip()[:4000], numbered=numbered, last_allowed=len(sents) - 1)
        req = ChatRequest(
            messages=[{"role": "system", "content": LLM_SYSTEM}, {"role": "user", "content": user}],
            sampling=Sampling(temperature=0.0, max_tokens=self.max_tokens),
            id=trace.record.id,
        )
        return req, len(sents)

    def _fallback(self, trace: Trace, reason: str, detail: str = "") -> Record | Failure:
        if self.fallback != "heuristic":
            return Failure(trace.record.id, f"{reason}: {detail}".rstrip(": ") + " (retried next run; --fallback heuristic to accept the heuristic)")
        self.fallbacks[reason] += 1
        n = heuristic_u_sentences(trace, self.max_u)
        return n if isinstance(n, Failure) else finish(trace, UKLabel(n, fallback=reason), self.name)

    def label(self, records: Sequence[Record]) -> list[Record | Failure]:
        from ..llm.structured import ParseFailure, parse_json

        out: list[Record | Failure | None] = [None] * len(records)
        pending: list[tuple[int, Trace, int]] = []
        reqs = []
        for i, rec in enumerate(records):
            tr = prepare(rec)
            if isinstance(tr, Failure):
                out[i] = tr
                continue
            if len(tr.sentences(2)) < 2:
                out[i] = Failure(rec.id, "single_sentence: the thinking has one sentence, so there is no K")
                continue
            req, n = self.request(tr)
            pending.append((i, tr, n))
            reqs.append(req)
        comps = self.backend.generate(reqs) if reqs else []
        if len(comps) != len(reqs):
            raise RuntimeError(f"backend returned {len(comps)} completions for {len(reqs)} requests")
        for (i, tr, n), comp in zip(pending, comps):
            if comp.error is not None:
                out[i] = self._fallback(tr, "llm_error", comp.error)
                continue
            parsed = parse_json(comp.text, LLMChoice)
            if isinstance(parsed, ParseFailure):
                out[i] = self._fallback(tr, "llm_unparseable")
                continue
            last = parsed.last_understanding_sentence
            if not 1 <= last <= n - 1:
                out[i] = self._fallback(tr, "llm_index_out_of_range")
                continue
            safety = parsed.key_sentence_is_safety if self.use_llm_safety else None
            out[i] = finish(tr, UKLabel(last, k_is_safety=safety), self.name)
        return out  # type: ignore[return-value]


class LabellerConfig(BaseModel):
    """What `safekey annotate` fingerprints: a rerun with other settings is refused, not mixed."""

    model_config = ConfigDict(extra="forbid")
    labeller: str = Field("heuristic", pattern="^(heuristic|llm)$")
    model: str | None = None
    base_url: str | None = None
    max_u_sentences: int = Field(MAX_U_SENTENCES, ge=1)
    llm_sentences: int = Field(10, ge=2)
    llm_safety: bool = False
    fallback: str | None = Field(None, pattern="^heuristic$")  # opt-in: label unusable LLM replies heuristically
    segmenter: str = "pysbd-0.3.4+quotes+question"
