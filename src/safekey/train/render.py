"""Render (conversation → assistant response) once with the model's chat template, keeping the thinking.

Why sentinels instead of editing the template: R1-Distill templates strip everything before ``</think>``
from assistant turns, Llama-3 templates ``trim`` contents, Qwen3 templates re-assemble the thinking. We
render the template with each message content replaced by a unique private-use sentinel (which contains
no ``</think>`` and no whitespace to trim), then substitute the real texts. That keeps the response
byte-exact whatever the template does to contents, and gives exact character offsets of the query and
the assistant content. If the template drops or repeats a sentinel we fail loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..types import Record, SafekeyError, split_think

THINK_OPEN = "<think>\n"
_SENT = "\ue000SKM{}\ue001"  # private-use code points: never in real text, never trimmed


@dataclass
class Rendered:
    text: str
    query_spans: list[tuple[int, int]]  # char spans of every user/system message content
    assistant_start: int  # char offset of the assistant content (== start of `response`)
    assistant_end: int  # end of the assistant content
    label_end: int  # end of the end-of-turn marker that follows (the model learns to stop)
    response: str  # the assistant content actually rendered (think_flag / base_flag applied)


def training_response(rec: Record, think_flag: int = 1, base_flag: int = 0) -> str:
    """The assistant text to train on (think_flag/base_flag variants)."""
    if rec.response is None:
        raise SafekeyError(f"record {rec.id}: no 'response' to train on")
    if think_flag:
        return rec.response
    parts = split_think(rec.response)
    if parts is None:
        raise SafekeyError(f"record {rec.id}: think_flag=0 needs a '<think>\\n…\\n</think>\\n\\n…' response")
    answer = parts[1]
    return answer if base_flag else "<think>\n\n</think>\n\n" + answer


def render(tok, rec: Record, *, think_flag: int = 1, base_flag: int = 0) -> Rendered:
    if not getattr(tok, "chat_template", None):
        raise SafekeyError(f"tokenizer {getattr(tok, 'name_or_path', '?')} has no chat template")
    msgs = rec.prompt_messages()
    response = training_response(rec, think_flag, base_flag)
    texts = [m["content"] for m in msgs] + [response]
    probe = [{"role": m["role"], "content": _SENT.format(i)} for i, m in enumerate(msgs)]
    probe.append({"role": "assistant", "content": _SENT.format(len(msgs))})
    try:
        tmpl = tok.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    except Exception as e:  # jinja raises plain Exceptions (e.g. role alternation checks)
        raise SafekeyError(f"record {rec.id}: chat template failed: {e}") from None
    out, spans, pos = [], [], 0
    for i, content in enumerate(texts):
        s = _SENT.format(i)
        if tmpl.count(s) != 1:
            raise SafekeyError(
                f"record {rec.id}: the chat template of {getattr(tok, 'name_or_path', '?')} "
                f"{'dropped' if s not in tmpl else 'repeated'} the content of message {i}; "
                "cannot render this conversation verbatim"
            )
        j = tmpl.index(s, pos) if s in tmpl[pos:] else -1
        if j < 0:
            raise SafekeyError(f"record {rec.id}: chat template reordered the messages")
        out.append(tmpl[pos:j])
        start = sum(map(len, out))
        out.append(content)
        spans.append((start, start + len(content)))
        pos = j + len(s)
    tail = tmpl[pos:]
    out.append(tail)
    text = "".join(out)
    a0, a1 = spans[-1]
    eot = len(tail) - len(tail.lstrip())  # whitespace the template puts right after the content is not a marker
    marker = tail.lstrip().split("\n", 1)[0] if tail.strip() else ""
    label_end = a1 + eot + len(marker) if marker else a1
    return Rendered(text, spans[:-1], a0, a1, label_end, response)


def template_drops_thinking(tok) -> bool:
    """True when plain `apply_chat_template` loses the thinking of an assistant turn (R1-Distill style).

    Informational: our renderer keeps the thinking either way; `train inspect` prints this.
    """
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<think>\nPROBE-THOUGHT\n</think>\n\nPROBE-ANSWER"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    return "PROBE-THOUGHT" not in text


def generation_prompt(tok, rec: Record) -> str:
    """The prompt exactly as generation sees it (``add_generation_prompt=True``): what the policy is
    sampled from at evaluation, in GRPO and in the pairs stage. An R1-Distill template ends it with
    ``<｜Assistant｜><think>\\n``; the training render's text before the assistant content stops at
    ``<｜Assistant｜>``, so a policy trained from that prefix learnt on contexts it never sees."""
    try:
        return tok.apply_chat_template(rec.prompt_messages(), tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja raises plain Exceptions (e.g. role alternation checks)
        raise SafekeyError(f"record {rec.id}: chat template failed: {e}") from None


def prompt_as_generated(tok, rec: Record, rendered: Rendered) -> tuple[str, str]:
    """(prompt, opening) for a completion the policy wrote after its generation prompt: the prompt
    ends as the generation prompt ends, and `opening` is what the template adds after the rendered
    assistant start (``<think>\\n`` on R1 templates; "" elsewhere) — a completion that already starts
    with it (the model wrote it itself) keeps the rendered prompt instead."""
    before = rendered.text[:rendered.assistant_start]
    gen = generation_prompt(tok, rec)
    if gen.startswith(before) and len(gen) > len(before):
        opening = gen[len(before):]
        if opening.strip() and not rendered.response.startswith(opening.lstrip()):
            return gen, opening
    return before, ""
