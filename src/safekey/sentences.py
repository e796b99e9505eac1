"""Sentence segmentation of a reasoning trace with exact character offsets.

Why not a plain regex: the opening of a trace restates the user's question, often in quotes that
themselves contain sentences ("...asking, "I want X. Where do I buy Y?" Hmm, ..."), abbreviations
("427 W. Virginia St."), numbered lists and newlines. pysbd (rule-based, offline) handles
abbreviations, numbers and lists; on top of it we (1) always break at newlines, (2) never break
inside an open double quote, and (3) never break inside a stretch copied verbatim from the
question. Offsets index the original text exactly: ``text[s.start:s.end] == s.text``.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

_WINDOW = 12  # chars each side of a boundary that, found verbatim in the question, mark a restatement


@dataclass(frozen=True)
class Sentence:
    start: int  # offset of the first non-space char
    end: int  # offset after the last non-space char
    text: str


@functools.lru_cache(maxsize=1)
def _pysbd():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=False)


def _pysbd_pieces(line: str) -> list[tuple[int, int]]:
    """(start, end) of pysbd's sentences in `line`, mapped back by a forward-moving cursor.

    pysbd's own char_span mode searches with str.find from the start and mislocates repeated
    sentences; the cursor keeps mapping monotone and exact.
    """
    spans: list[tuple[int, int]] = []
    cursor = 0
    for piece in _pysbd().segment(line):
        stripped = piece.strip()
        if not stripped:
            continue
        i = line.find(stripped, cursor)
        if i < 0:  # pysbd altered the text (should not happen with clean=False): keep the rest whole
            rest = line[cursor:].strip()
            if rest:
                j = line.index(rest, cursor)
                spans.append((j, j + len(rest)))
            return spans
        spans.append((i, i + len(stripped)))
        cursor = i + len(stripped)
    return spans


# pysbd takes some lowercase words for abbreviations ("who Bob is. I'm not sure" stays one
# sentence: "Is." is a Bible-book abbreviation in its list). A lowercase word + [.!?] + space +
# capital is a boundary unless the word is a real lowercase abbreviation.
_MISSED_END = re.compile(r"\b([a-z]{2,})[.!?](\s+)(?=[A-Z])")
_LOWER_ABBREV = frozenset(
    ["etc", "vs", "approx", "esp", "incl", "al", "cf", "ca", "fig", "figs", "eq", "eqs", "vol", "pp", "ed", "eds", "dept", "est", "misc", "resp", "viz", "ibid", "op", "seq"]
)


def _refine(line: str, s: int, e: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = s
    for m in _MISSED_END.finditer(line, s, e):
        if m.group(1) in _LOWER_ABBREV:
            continue
        out.append((start, m.start(2)))
        start = m.end()
    out.append((start, e))
    return out



def _inside_quote(line: str, pos: int) -> bool:
    """True when `pos` lies inside an unclosed double quote of `line` (straight or curly)."""
    before, after = line[:pos], line[pos:]
    if before.count('"') % 2 == 1 and '"' in after:
        return True
    return before.count("\u201c") > before.count("\u201d") and "\u201d" in after


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.lower())


def _in_question(line: str, pos: int, question_norm: str) -> bool:
    """True when the text around boundary `pos` is copied verbatim from the question."""
    if not question_norm:
        return False
    left = line[max(0, pos - _WINDOW) : pos]
    right = line[pos : pos + _WINDOW]
    if len(left.strip()) < _WINDOW // 2 or len(right.strip()) < _WINDOW // 2:
        return False
    window = _norm(left + right)
    return window in question_norm


_CHUNK = 300  # pysbd is ~O(len) per call with a big constant: feed long lines in safe chunks


def _chunks(line: str, qn: str) -> Iterator[tuple[int, int]]:
    """Cut a long line into pieces of >= _CHUNK chars at unambiguous boundaries only (lowercase
    word + [.!?] + space + capital, outside quotes and question restatements), so pysbd sees every
    hard case whole and the labellers can stop after the first pieces."""
    start = 0
    for m in _MISSED_END.finditer(line):
        cut = m.start(2)
        if cut - start < _CHUNK or m.group(1) in _LOWER_ABBREV:
            continue
        if _inside_quote(line, cut) or _in_question(line, m.end(), qn):
            continue
        yield start, m.end()
        start = m.end()
    yield start, len(line)


def iter_sentences(text: str, *, question: str | None = None) -> Iterator[Sentence]:
    """Sentences of `text` in order, lazily (see :func:`segment`)."""
    qn = _norm(question) if question else ""
    pos = 0
    for line in text.split("\n"):
        base = pos
        pos += len(line) + 1
        if not line.strip():
            continue
        for cs, ce in _chunks(line, qn):
            chunk = line[cs:ce]
            spans = [(cs + a, cs + b) for s0, e0 in _pysbd_pieces(chunk) for a, b in _refine(chunk, s0, e0)]
            merged: list[list[int]] = []
            for s, e in spans:
                if merged and (_inside_quote(line, s) or _in_question(line, s, qn)):
                    merged[-1][1] = e
                else:
                    merged.append([s, e])
            for s, e in merged:
                yield Sentence(base + s, base + e, text[base + s : base + e])


def segment(text: str, *, question: str | None = None, max_sentences: int | None = None) -> list[Sentence]:
    """Split `text` into sentences with exact offsets.

    `question` (optional) protects verbatim restatements of it from being split. `max_sentences`
    stops early (the labellers only need the opening of a long trace; pysbd is the slow part).
    """
    it = iter_sentences(text, question=question)
    return list(it) if max_sentences is None else list(itertools.islice(it, max_sentences))


_REGEX_END = re.compile(r"[.!?]+[\"\u201d')\]]*(?=\s)|\n")


def segment_regex(text: str) -> list[Sentence]:
    """Naive baseline (a sentence ends after . ! ? plus closing quotes, or at a newline).

    Kept only to measure pysbd against (see tests/test_annotate_dev.py)."""
    out: list[Sentence] = []
    start = 0
    ends = [m.end() for m in _REGEX_END.finditer(text)] + [len(text)]
    for end in ends:
        piece = text[start:end]
        if piece.strip():
            s = start + len(piece) - len(piece.lstrip())
            e = start + len(piece.rstrip())
            out.append(Sentence(s, e, text[s:e]))
        start = end
    return out
