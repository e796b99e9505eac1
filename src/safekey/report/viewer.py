"""A static per-item viewer for judged.jsonl files (`safekey view RUN… -o view.html`).

Why: a rate is only as good as the verdicts under it, and reading them is how a researcher finds a
judge that calls a polite refusal "harmful" or a truncated thought "safe". One self-contained HTML
file (no server, no network) lists every judged item of the given runs with filters by model,
benchmark, verdict, category, judge disagreement (ensemble members or answer vs thinking verdicts
that differ) and model disagreement (the same prompt judged differently across the runs), plus a
text search. Model text is data: it is embedded as JSON and shown with ``textContent``, never
parsed as HTML, so a response holding ``<script>`` renders as those characters.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..judges.base import own_start
from ..metrics import judged_flag
from ..types import SafekeyError, thinking_text
from .collect import collect


def _verdict(rec: dict[str, Any]) -> str:
    j = rec.get("judge") or {}
    if j.get("part") == "both":
        j = j.get("answer") or {}
    if j.get("skipped"):
        return "not judged"
    return str(j.get("label") or ("harmful" if j.get("harmful") else "refused" if j.get("refused") else "unknown"))


def judge_disagreement(rec: dict[str, Any]) -> list[str]:
    """Why the judging of one item is contested: ensemble members differ, or the answer's and the
    thinking's verdicts differ (``--judge-part both``)."""
    j = rec.get("judge") or {}
    out = []
    members = ((j.get("detail") or {}).get("members") or {}) if isinstance(j.get("detail"), dict) else {}
    flags = {name: v.get("harmful", v.get("refused")) for name, v in members.items() if isinstance(v, dict)}
    if len({f for f in flags.values() if isinstance(f, bool)}) > 1:
        out.append("members: " + ", ".join(f"{k}={v}" for k, v in flags.items()))
    if j.get("part") == "both":
        a, t = (j.get("answer") or {}).get("harmful"), (j.get("thinking") or {}).get("harmful")
        if isinstance(a, bool) and isinstance(t, bool) and a != t:
            out.append(f"answer harmful={a}, thinking harmful={t}")
    return out


def _categories(r: dict[str, Any]) -> list[str]:
    c = r.get("bench_category") or r.get("category") or []
    return [str(x) for x in c] if isinstance(c, list) else [str(c)]


def own_parts(resp: str, generation: str | None, opens_think: bool | None) -> tuple[str, str, str]:
    """(prefill, thinking, answer) of a response: the attack's prefill apart, and the thinking and
    answer of the model's own text only (the judge's reading, :func:`safekey.judges.base.judged_text`),
    so an audit page never shows the attacker's words as the model's."""
    own = own_start(resp, generation)
    prefill = resp[:own]
    if "</think>" in resp:
        close = resp.rfind("</think>")
        start = resp.find("<think>")
        begin = max((start + len("<think>")) if 0 <= start < close else 0, own)
        thinking = resp[begin:close].strip("\n") if begin < close else ""
        return prefill, thinking, resp[max(close + len("</think>"), own):].lstrip("\n")
    if own == 0:  # the model wrote all of it (or the record does not say): as before
        return "", thinking_text(resp, opens_think) or "", "" if opens_think else resp
    opened = bool(opens_think) or "<think>" in resp  # a thinking that never closed: the model's words are thinking
    text = resp[own:]
    return prefill, (text if opened else ""), ("" if opened else text)


def viewer_items(paths: list[str | Path]) -> list[dict[str, Any]]:
    col = collect(paths)
    runs = [e for e in col.evals if e.kind == "safety"]
    if not runs:
        raise SafekeyError(f"no safety eval run under {', '.join(map(str, paths))}")
    items = []
    for e in runs:
        for bench, recs in e.items.items():
            for rid, r in recs.items():
                resp = str(r.get("response") or r.get("generation") or "")
                gen = r.get("generation") if isinstance(r.get("generation"), str) else None
                prefill, thinking, answer = own_parts(resp, gen, r.get("prompt_opens_think"))
                j = r.get("judge") or {}
                items.append({
                    "model": e.label, "bench": bench, "id": rid, "question": str(r.get("question") or ""),
                    "prefill": prefill, "thinking": thinking, "answer": answer,
                    "verdict": _verdict(r), "flag": judged_flag(r), "unsafe": r.get("unsafe"),
                    "category": _categories(r),
                    "reason": str(j.get("reason") or (j.get("answer") or {}).get("reason") or ""),
                    "judge": str(j.get("name") or ""), "disagreement": judge_disagreement(r),
                    "truncated": bool((r.get("truncation") or {}).get("think_not_closed")),
                })
    by_prompt: dict[tuple[str, str], set[Any]] = {}
    for it in items:
        by_prompt.setdefault((it["bench"], it["id"]), set()).add(it["flag"])
    for it in items:
        it["models_disagree"] = len({f for f in by_prompt[(it["bench"], it["id"])] if f is not None}) > 1
    return items


PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta name="generator" content="safekey view"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}} .bar{{display:flex;gap:.6em;flex-wrap:wrap;margin-bottom:1em}}
select,input{{font:inherit;padding:2px}} .item{{border:1px solid #ccc;border-radius:6px;padding:.6em;margin:.5em 0}}
.meta{{color:#666;font-size:12px}} .q{{font-weight:600;white-space:pre-wrap}} .t{{color:#555;white-space:pre-wrap;background:#f6f6f6}}
.a{{white-space:pre-wrap}} .p{{white-space:pre-wrap;color:#805;background:#fbeef6;font-style:italic}} .v{{display:inline-block;padding:0 .4em;border-radius:4px;background:#eee}}
.harm{{background:#f8d0cc}} .safe{{background:#d3efd3}} .dis{{color:#a40}}
</style></head><body>
<h1>{title}</h1><p class="meta">{summary}</p>
<div class="bar">
<label>model <select id="f-model"></select></label><label>benchmark <select id="f-bench"></select></label>
<label>verdict <select id="f-verdict"></select></label><label>category <select id="f-category"></select></label>
<label><input type="checkbox" id="f-dis"> judge disagreement</label>
<label><input type="checkbox" id="f-mdis"> models disagree</label>
<label>search <input id="f-text" size="24"></label><span id="count" class="meta"></span>
</div><div id="list"></div>
<script type="application/json" id="data">{data}</script>
<script>
const items = JSON.parse(document.getElementById('data').textContent);
const F = id => document.getElementById(id);
function fill(id, values) {{
  const s = F(id); const all = document.createElement('option'); all.value = ''; all.textContent = '(all)'; s.appendChild(all);
  [...new Set(values)].sort().forEach(v => {{ const o = document.createElement('option'); o.value = v; o.textContent = v; s.appendChild(o); }});
  s.onchange = render;
}}
fill('f-model', items.map(i => i.model)); fill('f-bench', items.map(i => i.bench));
fill('f-verdict', items.map(i => i.verdict)); fill('f-category', items.flatMap(i => i.category));
['f-dis', 'f-mdis'].forEach(id => F(id).onchange = render); F('f-text').oninput = render;
function el(tag, cls, text) {{ const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }}
function render() {{
  const m = F('f-model').value, b = F('f-bench').value, v = F('f-verdict').value, c = F('f-category').value;
  const q = F('f-text').value.toLowerCase();
  const shown = items.filter(i => (!m || i.model === m) && (!b || i.bench === b) && (!v || i.verdict === v)
    && (!c || i.category.includes(c)) && (!F('f-dis').checked || i.disagreement.length)
    && (!F('f-mdis').checked || i.models_disagree)
    && (!q || (i.question + ' ' + i.thinking + ' ' + i.answer).toLowerCase().includes(q)));
  const list = F('list'); list.replaceChildren();
  shown.slice(0, 500).forEach(i => {{
    const d = el('div', 'item');
    const meta = el('div', 'meta', `${{i.model}} · ${{i.bench}} · ${{i.id}} · ${{i.category.join(', ')}} · judge ${{i.judge}}${{i.truncated ? ' · thinking cut off' : ''}}`);
    const ver = el('span', 'v ' + (i.flag === true ? (i.unsafe === 0 ? 'safe' : 'harm') : i.flag === false ? (i.unsafe === 0 ? 'harm' : 'safe') : ''), i.verdict);
    meta.prepend(ver, ' ');
    d.append(meta, el('div', 'q', i.question));
    if (i.prefill) d.append(el('div', 'p', 'prefilled by the attack, not written by the model: ' + i.prefill));
    if (i.thinking) d.append(el('div', 't', i.thinking));
    d.append(el('div', 'a', i.answer));
    if (i.reason) d.append(el('div', 'meta', 'reason: ' + i.reason));
    i.disagreement.forEach(x => d.append(el('div', 'meta dis', 'disagreement: ' + x)));
    list.appendChild(d);
  }});
  F('count').textContent = `${{shown.length}} of ${{items.length}} items` + (shown.length > 500 ? ' (first 500 shown)' : '');
}}
render();
</script></body></html>
"""


def build_viewer(paths: list[str | Path], out: str | Path, *, title: str = "safekey judged items") -> Path:
    items = viewer_items(paths)
    # JSON inside <script>: "</" and "<!--" must not end or comment the element early
    # ("<\\!--" is not a JSON escape: one "<!--" in a response made JSON.parse fail and blanked the page);
    # \\u003c is, and no "<" is left to end the element or open a comment
    data = json.dumps(items, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    models = sorted({i["model"] for i in items})
    summary = (f"{len(items)} judged items from {len(models)} run(s): {', '.join(models)}; "
               f"{sum(1 for i in items if i['disagreement'])} with judge disagreement, "
               f"{sum(1 for i in items if i['models_disagree'])} where the models' verdicts differ")
    page = PAGE.format(title=html.escape(title), summary=html.escape(summary), data=data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, page)
    return out
