"""Builds the starter dataset (train.jsonl), the held-out evaluation prompts (heldout_harmful,
heldout_jailbreak, heldout_benign) and held-out traces for the analyses (heldout_traces.jsonl: the
held-out prompts with responses written like the training ones, never trained on).

Why a generator: every prompt, restatement, key sentence and answer below is hand-written for this
project; the generator only assembles them into the STAR-1 response shape
``"<think>\\n{U} {K} {plan}\\n</think>\\n\\n{answer}"`` and, because it knows where U and K are,
records ``u_end``/``k_end`` by construction (later cross-checked against ``safekey annotate``).
Harmful items get refusals or safe completions only; nothing here gives uplift.

Run ``python -m safekey.resources.starter.make_starter`` to regenerate (deterministic).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = "safekey-starter"

# Every text (prompts, restatements, policy concerns, refusals, benign answers, jailbreak wrappers)
# lives in tables.yaml beside this file; this module only assembles them.
_T = yaml.safe_load((HERE / "tables.yaml").read_text(encoding="utf-8"))
HARMFUL: dict[str, list[list[str]]] = _T["HARMFUL"]  # category -> [prompt, restatement]; first N_TRAIN train
BENIGN: dict[str, list[list[str]]] = _T["BENIGN"]  # category -> [prompt, restatement, topic, answer]
CONCERN: dict[str, list[str]] = _T["CONCERN"]  # category -> [why it is harmful, the policy cited in K]
HARM_OPENERS: list[str] = _T["HARM_OPENERS"]
HARM_PLANS: dict[str, list[str]] = _T["HARM_PLANS"]
REFUSALS: dict[str, list[str]] = _T["REFUSALS"]
BENIGN_KEYS: list[str] = _T["BENIGN_KEYS"]
BENIGN_PLANS: list[str] = _T["BENIGN_PLANS"]
U_SECOND: list[str] = _T["U_SECOND"]
JAILBREAKS: list[list[str]] = _T["JAILBREAKS"]  # [name, template with {q}]; common public patterns

N_TRAIN = 8  # per category and side; the rest are held out
# The plan sentence after K makes traces ~15 tokens longer; the demo generates on 2 CPU cores, where
# every token counts, so the committed data has none (the writing is kept for longer variants).
WITH_PLAN = False


def _u(restate: str, i: int) -> str:
    return f"The user {restate}.{U_SECOND[i % len(U_SECOND)]}"


def harmful_record(cat: str, idx: int, prompt: str, restate: str, rng: random.Random) -> dict:
    concern, policy = CONCERN[cat]
    u = _u(restate, idx)
    k = rng.choice(HARM_OPENERS).format(concern=concern, policy=policy)
    # sentence-initial capital after a colon-free opener
    plan = rng.choice(HARM_PLANS[cat]) if WITH_PLAN else ""
    answer = REFUSALS[cat][idx % len(REFUSALS[cat])]
    return _assemble(f"h-{_slug(cat)}-{idx:02d}", prompt, cat, 1, u, k, plan, answer)


def benign_record(cat: str, idx: int, prompt: str, restate: str, topic: str, answer: str, rng: random.Random) -> dict:
    u = _u(restate, idx + 1)
    k = rng.choice(BENIGN_KEYS).format(topic=topic)
    plan = rng.choice(BENIGN_PLANS) if WITH_PLAN else ""
    return _assemble(f"b-{_slug(cat)}-{idx:02d}", prompt, cat, 0, u, k, plan, answer)


def _assemble(rid: str, prompt: str, cat: str, unsafe: int, u: str, k: str, plan: str, answer: str) -> dict:
    head = "<think>\n"
    sep = "\n\n" if len(rid) % 2 else " "  # both paragraph styles occur in STAR-1 traces
    # the thinking is U + K (+ a short plan only when asked): short traces keep CPU generation cheap
    response = f"{head}{u}{sep}{k}{' ' + plan if plan else ''}\n</think>\n\n{answer}"
    u_end = len(head) + len(u)
    k_start = u_end + len(sep)
    k_end = k_start + len(k)
    assert response[k_start:k_end] == k
    return {"id": rid, "question": prompt, "source": SOURCE, "category": [cat], "unsafe": unsafe,
            "response": response, "u_end": u_end, "k_end": k_end, "k_text": k}


def _slug(cat: str) -> str:
    return cat.split(" /")[0].split()[0].lower().replace("-", "")


def build() -> dict[str, list[dict]]:
    rng = random.Random(2002)
    train, h_harm, h_jb, h_ben, h_traces = [], [], [], [], []
    for cat in HARMFUL:
        assert len(HARMFUL[cat]) >= N_TRAIN + 3 and len(BENIGN[cat]) >= N_TRAIN + 3, cat
        for i, (p, r) in enumerate(HARMFUL[cat]):
            if i < N_TRAIN:
                train.append(harmful_record(cat, i, p, r, rng))
            else:
                h_traces.append(harmful_record(cat, i, p, r, rng))
                h_harm.append({"id": f"ho-h-{_slug(cat)}-{i:02d}", "question": p, "category": [cat], "unsafe": 1,
                               "source": SOURCE})
        for i, (p, r, t, a) in enumerate(BENIGN[cat]):
            if i < N_TRAIN:
                train.append(benign_record(cat, i, p, r, t, a, rng))
            else:
                h_traces.append(benign_record(cat, i, p, r, t, a, rng))
                h_ben.append({"id": f"ho-b-{_slug(cat)}-{i:02d}", "question": p, "category": [cat], "unsafe": 0,
                              "source": SOURCE})
    for j, item in enumerate(h_harm):
        name, tpl = JAILBREAKS[j % len(JAILBREAKS)]
        h_jb.append({**item, "id": item["id"].replace("ho-h-", f"ho-jb-{name}-"), "question": tpl.format(q=item["question"]),
                     "attack": name, "plain_id": item["id"]})
    # interleave harmful/benign in training so a truncated run (--limit) stays balanced
    harm = [r for r in train if r["unsafe"] == 1]
    ben = [r for r in train if r["unsafe"] == 0]
    rng.shuffle(harm)
    rng.shuffle(ben)
    train = [x for pair in zip(harm, ben) for x in pair]
    return {"train.jsonl": train, "heldout_harmful.jsonl": h_harm, "heldout_jailbreak.jsonl": h_jb,
            "heldout_benign.jsonl": h_ben, "heldout_traces.jsonl": h_traces}


def _write(path: Path, recs: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def annotate(train: list[dict]) -> list[dict]:
    """Run `safekey annotate` (heuristic) on the traces with our spans removed; keep its output.

    The committed training file is the annotator's, and it must agree with the spans we know by
    construction — a cross-check of both.
    """
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.jsonl"
        _write(raw, [{k: v for k, v in r.items() if k not in ("u_end", "k_end", "k_text")} for r in train])
        out = Path(tmp) / "annotated.jsonl"
        subprocess.run([sys.executable, "-m", "safekey.cli.main", "annotate", str(raw), "-o", str(out),
                        "--labeller", "heuristic", "--no-progress"], check=True)
        got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    bad = [r["id"] for r in train if (got[r["id"]]["u_end"], got[r["id"]]["k_end"]) != (r["u_end"], r["k_end"])]
    print(f"annotator agrees with the constructed spans on {len(train) - len(bad)}/{len(train)} records")
    if bad:
        raise SystemExit(f"annotator disagrees on {bad[:10]}")
    return [got[r["id"]] for r in train]


def main() -> None:
    for name, recs in build().items():
        if name in ("train.jsonl", "heldout_traces.jsonl"):
            recs = annotate(recs)
        _write(HERE / name, recs)
        print(f"{name}: {len(recs)} records")


if __name__ == "__main__":
    main()
