"""Safety benchmarks: one registry entry per benchmark, each with its canonical source and a local path.

Why a registry of small nouns: every benchmark differs only in where its rows live and how a row
becomes a :class:`Record` (``id``, ``question`` or ``messages``, ``unsafe``, optional ``prefill``).
The runner, judges and metrics never look at benchmark-specific columns.

Conventions for the records produced here:

* ``unsafe`` — 1 harmful request (counts toward ``harmful_rate``), 0 benign look-alike (counts toward
  the over-refusal metrics ``refusal_rate`` / ``compliance_rate``).
* ``bench_category`` — the benchmark's own category labels (a list of strings). They are *not* the
  policy vocabulary of ``Record.category``, so they live in their own field.
* ``prefill`` — attacker text placed at the start of the assistant turn (the prefilling attack).

Where rows come from, first match wins: an explicit path (``--bench-path NAME=PATH``), the file under
the shared data folder (``SAFEKEY_DATA_DIR``), the canonical hub id / URL (needs the network).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..paths import data_dir
from ..sources import load_table
from ..types import Message, Record, SafekeyError

PREFILL_TOKENS_DEFAULT = 20


class TokenCounter(Protocol):
    """Cuts a text after its first n tokens, keeping the original characters."""

    name: str

    def head(self, text: str, n: int) -> str: ...


class WhitespaceCounter:
    """Tokens = whitespace-separated words (used when the evaluated model has no local tokenizer)."""

    name = "whitespace"

    def head(self, text: str, n: int) -> str:
        words = list(re.finditer(r"\S+", text))
        if n <= 0 or not words:
            return ""
        return text[: words[min(n, len(words)) - 1].end()]


class HFTokenCounter:
    """Tokens of the evaluated model's own tokenizer, cut by offset mapping (exact source characters)."""

    def __init__(self, tokenizer: Any, name: str):
        self.tok = tokenizer
        self.name = f"tokenizer:{name}"

    def head(self, text: str, n: int) -> str:
        if n <= 0:
            return ""
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= n:
            return text
        return text[: offsets[n - 1][1]]


def token_counter_for(model_spec: str | None) -> TokenCounter:
    """The evaluated model's tokenizer for ``hf:``/``vllm:`` models that resolve locally, else words.

    API models (``openai:``) have no tokenizer we can load offline, so their prefixes are counted in
    whitespace words; the counter's ``name`` is recorded in the run config either way.
    """
    if not model_spec or ":" not in model_spec:
        return WhitespaceCounter()
    kind, name = model_spec.split(":", 1)
    if kind not in ("hf", "vllm"):
        return WhitespaceCounter()
    from ..models import load_tokenizer

    try:
        tok = load_tokenizer(name, trust_remote_code=False)
    except OSError as e:
        raise SafekeyError(f"could not load the tokenizer of {model_spec} to count prefill tokens: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise SafekeyError(f"{model_spec}: a fast tokenizer is needed to cut prefill prefixes by offsets")
    return HFTokenCounter(tok, name)


@dataclass(frozen=True)
class BenchOptions:
    """Knobs that change a benchmark's items (and therefore belong in the run fingerprint)."""

    prefill_tokens: int = PREFILL_TOKENS_DEFAULT
    prefill_prefix: str = ""  # e.g. "<think>\n" for models whose template does not open the thinking
    counter: TokenCounter = field(default_factory=WhitespaceCounter)
    seed: int = 42


Converter = Callable[[list[dict[str, Any]], BenchOptions], list[Record]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    canonical: str  # hub dataset id or URL
    local: str | None  # path relative to the shared data folder
    convert: Converter
    reference_size: int | None = None
    hub_config: str | None = None
    hub_split: str | None = None

    def source_for(self, path: str | Path | None = None) -> str:
        if path is not None:
            return str(path)
        d = data_dir()
        if self.local and d is not None and (d / self.local).exists():
            return str(d / self.local)
        return self.canonical

    def load(self, path: str | Path | None = None, *, limit: int | None = None, options: BenchOptions | None = None) -> list[Record]:
        """The benchmark's records (first `limit` of them), in the benchmark's canonical order."""
        src = self.source_for(path)
        local = Path(src).exists()
        try:
            rows = load_table(src, config=None if local else self.hub_config, split=None if local else self.hub_split)
        except SafekeyError as e:
            if local:
                raise
            raise SafekeyError(f"benchmark {self.name}: {e}; or point it at a local copy with "
                               f"--bench-path {self.name}=FILE") from None
        recs = self.convert(rows, options or BenchOptions())
        if not recs:
            raise SafekeyError(f"benchmark {self.name}: no items in {src}")
        return recs[:limit] if limit is not None else recs


# ---------------------------------------------------------------------------------------------
# converters


def _col(row: dict[str, Any], *names: str) -> Any:
    for n in names:
        if n in row and row[n] not in (None, ""):
            return row[n]
    raise SafekeyError(f"row has none of the columns {names}: {sorted(row)[:12]}")


def _rec(rid: str, source: str, question: str | None = None, *, unsafe: int, category: Any = None, **extra: Any) -> Record:
    cats = [category] if isinstance(category, str) and category else list(category or [])
    return Record(id=rid, question=question, source=source, unsafe=unsafe, bench_category=cats, **extra)


def _strongreject(rows: list[dict], o: BenchOptions) -> list[Record]:
    return [
        _rec(f"strongreject-{i}", "strongreject", _col(r, "forbidden_prompt"), unsafe=1, category=r.get("category"))
        for i, r in enumerate(rows)
    ]


def _strongreject_jailbreak(rows: list[dict], o: BenchOptions) -> list[Record]:
    """The same StrongREJECT items (same index, same category) inside fixed jailbreak wrappers."""
    from .jailbreak_templates import wrap

    out = []
    for i, r in enumerate(rows):
        name, text = wrap(str(_col(r, "forbidden_prompt")), i)
        out.append(_rec(f"strongreject-jb-{i}", "strongreject-jailbreak", text, unsafe=1, category=r.get("category"),
                        attack=name, plain_id=f"strongreject-{i}"))
    return out


def _jbb(split: str) -> Converter:
    def conv(rows: list[dict], o: BenchOptions) -> list[Record]:
        out = []
        for i, r in enumerate(rows):
            idx = r.get("Index") or r.get("") or r.get("Unnamed: 0") or i
            out.append(_rec(f"jbb-{split}-{idx}", f"jbb-{split}", _col(r, "Goal", "goal"),
                            unsafe=1 if split == "harmful" else 0, category=r.get("Category"), behavior=r.get("Behavior")))
        return out

    return conv


def _wildjailbreak(rows: list[dict], o: BenchOptions) -> list[Record]:
    """adversarial_harmful rows, a 250-item sample with pandas ``random_state=seed`` (reference: 42)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if "data_type" in df.columns:
        df = df[df["data_type"] == "adversarial_harmful"]
    if len(df) > 250:
        df = df.sample(n=250, random_state=o.seed)
    return [
        _rec(f"wildjailbreak-{idx}", "wildjailbreak", str(r.get("adversarial") or r.get("prompt")), unsafe=1,
             vanilla=r.get("vanilla"))
        for idx, r in zip(df.index, df.to_dict(orient="records"))
    ]


WILDCHAT_PER_CATEGORY = 100


def _wildchat(rows: list[dict], o: BenchOptions) -> list[Record]:
    """Toxic first user turns. From raw WildChat rows: top-100 per OpenAI-moderation category of the
    first turn's score (union, first-seen order); from a prepared table: its prompt column as is."""
    if rows and "conversation" in rows[0]:
        firsts = []
        for i, r in enumerate(rows):
            if str(r.get("toxic")).lower() not in ("true", "1"):
                continue
            conv = r["conversation"]
            conv = json.loads(conv) if isinstance(conv, str) else conv
            mod = r.get("openai_moderation")
            mod = json.loads(mod) if isinstance(mod, str) else mod
            if not conv or not mod:
                continue
            firsts.append((str(r.get("conversation_hash") or i), conv[0]["content"], mod[0].get("category_scores", {})))
        cats = sorted({c for _, _, s in firsts for c in s})
        chosen: dict[str, tuple[str, list[str]]] = {}
        for c in cats:
            top = sorted(firsts, key=lambda x: -float(x[2].get(c, 0.0)))[:WILDCHAT_PER_CATEGORY]
            for h, text, _ in top:
                chosen.setdefault(h, (text, []))[1].append(c)
        return [_rec(f"wildchat-{h}", "wildchat", t, unsafe=1, category=cs) for h, (t, cs) in chosen.items()]
    return [
        _rec(f"wildchat-{r.get('id', i)}", "wildchat", _col(r, "prompt", "question", "text"), unsafe=1,
             category=r.get("category"))
        for i, r in enumerate(rows)
    ]


def _xstest(label: str) -> Converter:
    def conv(rows: list[dict], o: BenchOptions) -> list[Record]:
        return [
            _rec(f"xstest-{r['id']}", "xstest", r["prompt"], unsafe=1 if label == "unsafe" else 0, category=r.get("type"))
            for r in rows
            if r.get("label") == label
        ]

    return conv


def _advbench(rows: list[dict], o: BenchOptions) -> list[Record]:
    return [_rec(f"advbench-{i}", "advbench", _col(r, "goal"), unsafe=1) for i, r in enumerate(rows)]


def _harmbench(rows: list[dict], o: BenchOptions) -> list[Record]:
    """The standard (non-contextual, non-copyright) behaviors: they stand alone as prompts."""
    return [
        _rec(f"harmbench-{r['BehaviorID']}", "harmbench", r["Behavior"], unsafe=1, category=r.get("SemanticCategory"))
        for r in rows
        if r.get("FunctionalCategory", "standard") == "standard"
    ]


def _prefilling(rows: list[dict], o: BenchOptions) -> list[Record]:
    """AdvBench goal as the user turn + the first N tokens of a harmful R1-8B trace as the prefill."""
    out = []
    for i, r in enumerate(rows):
        trace = _col(r, "target")
        out.append(
            _rec(f"prefilling-{i}", "prefilling", _col(r, "goal"), unsafe=1,
                 prefill=o.prefill_prefix + o.counter.head(trace, o.prefill_tokens))
        )
    return out


def _messages(raw: Any, where: str) -> list[Message]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SafekeyError(f"{where}: 'messages' is not valid JSON ({e.msg})") from None
    if not isinstance(raw, list) or not raw:
        raise SafekeyError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    msgs = []
    for k, m in enumerate(raw):
        text = m.get("content", m.get("body")) if isinstance(m, dict) else None
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(text, str) or not text.strip():
            raise SafekeyError(f"{where}: messages[{k}] must be {{role: str, content: non-empty str}}, got {str(m)[:60]}")
        msgs.append(Message(role=m["role"], content=text))
    while msgs and msgs[-1].role == "assistant":  # replay up to the last user turn
        msgs.pop()
    if not msgs or msgs[-1].role != "user":
        raise SafekeyError(f"{where}: the conversation must end with a user turn")
    return msgs


def _multiturn(rows: list[dict], o: BenchOptions) -> list[Record]:
    """Static replay of multi-turn jailbreak conversations: a ``messages`` list, or MHJ-style
    ``message_0 … message_K`` columns holding ``{"role", "body"}`` JSON."""
    out = []
    for i, r in enumerate(rows):
        rid = str(r.get("id", r.get("question_id", i)))
        if "messages" in r:
            raw = r["messages"]
        else:
            keys = sorted((k for k in r if re.fullmatch(r"message_\d+", k) and r[k]), key=lambda k: int(k.split("_")[1]))
            raw = [json.loads(r[k]) if isinstance(r[k], str) else r[k] for k in keys]
        out.append(Record(id=f"multiturn-{rid}", messages=_messages(raw, f"multiturn row {i}"), source="multiturn",
                          unsafe=1, bench_category=[c for c in [r.get("category") or r.get("tactic")] if c]))
    return out


REGISTRY: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("strongreject", "StrongREJECT forbidden prompts (harmful)",
                  "https://raw.githubusercontent.com/alexandrasouly/strongreject/main/strongreject_dataset/strongreject_dataset.csv",
                  "strongreject/strongreject_dataset.csv", _strongreject, 313),
        Benchmark("strongreject-jailbreak", "StrongREJECT prompts in 5 fixed jailbreak wrappers (item i gets template i mod 5)",
                  "https://raw.githubusercontent.com/alexandrasouly/strongreject/main/strongreject_dataset/strongreject_dataset.csv",
                  "strongreject/strongreject_dataset.csv", _strongreject_jailbreak, 313),
        Benchmark("jbb-harmful", "JailbreakBench JBB-Behaviors, harmful split",
                  "JailbreakBench/JBB-Behaviors", "jbb/behaviors.csv", _jbb("harmful"), 100, "behaviors", "harmful"),
        Benchmark("jbb-benign", "JailbreakBench JBB-Behaviors, benign look-alikes (over-refusal)",
                  "JailbreakBench/JBB-Behaviors", "jbb/benign-behaviors.csv", _jbb("benign"), 100, "behaviors", "benign"),
        Benchmark("wildjailbreak", "WildJailbreak eval, adversarial_harmful, 250-item sample (random_state 42)",
                  "allenai/wildjailbreak", "wildjailbreak/eval.tsv", _wildjailbreak, 250, "eval", "train"),
        Benchmark("wildchat", "WildChat toxic first turns, top-100 per moderation category",
                  "allenai/WildChat-1M", "wildchat/WildChat.csv", _wildchat, 370, None, "train"),
        Benchmark("xstest", "XSTest safe prompts (over-refusal)",
                  "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/main/xstest_prompts.csv",
                  "xstest/xstest_prompts.csv", _xstest("safe"), 250),
        Benchmark("xstest-contrast", "XSTest unsafe contrast prompts (harmful)",
                  "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/main/xstest_prompts.csv",
                  "xstest/xstest_prompts.csv", _xstest("unsafe"), 200),
        Benchmark("advbench", "AdvBench harmful behaviors",
                  "https://raw.githubusercontent.com/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv",
                  "advbench/harmful_behaviors.csv", _advbench, 520),
        Benchmark("harmbench", "HarmBench text behaviors, standard functional category",
                  "https://raw.githubusercontent.com/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_all.csv",
                  "harmbench/harmbench_behaviors_text_all.csv", _harmbench, 200),
        Benchmark("prefilling", "Prefilling attack: AdvBench goal + first N tokens of a harmful R1-8B trace (SafeKey)",
                  "https://raw.githubusercontent.com/eric-ai-lab/SafeKey/main/benchmark/safe_benchmark/datasets/advbench_prefilling/harmful_r1_8b_gptjudge.csv",
                  "prefilling/harmful_r1_8b_gptjudge.csv", _prefilling, 121),
        Benchmark("multiturn", "Multi-turn jailbreak conversations on HarmBench objectives (static replay)",
                  "ScaleAI/mhj", "multiturn/mhj.jsonl", _multiturn, 143, None, "train"),
    ]
}


def get_benchmark(name: str) -> Benchmark:
    """A registry benchmark by name (case-insensitive); a near miss gets a "did you mean"."""
    import difflib

    key = name.strip().lower()
    if key not in REGISTRY:
        close = difflib.get_close_matches(key, list(REGISTRY), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SafekeyError(f"unknown benchmark {name!r}{hint} known: {', '.join(REGISTRY)} (or use --bench-file)")
    return REGISTRY[key]


def load_bench_file(path: str | Path, *, limit: int | None = None) -> list[Record]:
    """A custom JSONL/JSON benchmark: ``id``, ``question`` or ``messages``, ``unsafe`` 1/0, optional
    ``category`` (any string or list), optional ``prefill``. Errors name ``file:line``."""
    from ..store import iter_json_objects

    out: list[Record] = []
    for loc, obj, err in iter_json_objects(Path(path)):
        if err is not None or not isinstance(obj, dict):
            raise SafekeyError(f"{loc}: {err or 'expected a JSON object'}")
        if "id" not in obj or obj.get("unsafe") not in (0, 1, True, False):
            raise SafekeyError(f"{loc}: a benchmark item needs 'id' and 'unsafe' (1 or 0)")
        if not obj.get("question") and not obj.get("messages"):
            raise SafekeyError(f"{loc}: record {obj['id']}: needs 'question' or 'messages'")
        cat = obj.get("category")
        if cat is not None and not (isinstance(cat, str) or (isinstance(cat, list) and all(isinstance(c, str) for c in cat))):
            raise SafekeyError(f"{loc}: record {obj['id']}: 'category' must be a string or a list of strings, got {cat!r}")
        if obj.get("prefill") is not None and not isinstance(obj["prefill"], str):
            raise SafekeyError(f"{loc}: record {obj['id']}: 'prefill' must be a string, got {obj['prefill']!r}")
        if obj.get("question") is not None and not isinstance(obj["question"], str):
            raise SafekeyError(f"{loc}: record {obj['id']}: 'question' must be a string")
        fields = {"prefill": obj["prefill"]} if obj.get("prefill") else {}
        try:
            msgs = _messages(obj["messages"], loc) if obj.get("messages") else None
            out.append(Record(id=obj["id"], question=obj.get("question"), messages=msgs, unsafe=int(obj["unsafe"]),
                              source=obj.get("source") or Path(path).stem,
                              bench_category=[cat] if isinstance(cat, str) else list(cat or []), **fields))
        except ValueError as e:
            raise SafekeyError(f"{loc}: {e}") from None
    if not out:
        raise SafekeyError(f"{path}: no benchmark items")
    return out[:limit] if limit is not None else out


def bench_file_name(path: str | Path) -> str:
    """The run-folder name for a custom benchmark file: its stem, made path-safe (never ``..``)."""
    from ..paths import name_from_stem

    return name_from_stem(Path(path).stem)


def parse_bench_list(text: str | Sequence[str]) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    return [get_benchmark(n).name for n in names]
