"""What dedup is configured with and what it returns: the rule thresholds, the reference's per-source
n-gram sizes, the items and the recorded removals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# n-gram sizes the reference used per source (bigger sources → smaller n, i.e. stricter)
REFERENCE_NGRAM: dict[str, int] = {
    "GPTFuzz": 8, "SimpleSafetyTests": 8, "MaliciousInstruct": 8, "QHarm": 8, "TDCRedTeaming": 8,
    "MaliciousInstructions": 8, "HarmfulQ": 8, "HExPHI": 8, "HarmBench": 8, "AttaQ": 7, "HarmfulQA": 7,
    "SafetyInstructions": 7, "UltraSafety": 7, "ALERT": 7, "SaladBench": 8, "PKUSafeRLHF": 6,
    "BeaverTails": 5, "wildjailbreak": 5,
}


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ngram_sizes: dict[str, int] = Field(default_factory=lambda: dict(REFERENCE_NGRAM))
    test_ngram: int = Field(8, ge=2)
    min_short_words: int = Field(4, ge=1, description="short test prompts with at least this many words are matched as phrases")
    tfidf_threshold: float = Field(0.6, gt=0, le=1)
    embed_threshold: float = Field(0.7, gt=0, le=1)
    embedding: bool = True
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embed_batch_size: int = Field(32, ge=1, description="texts per forward pass (batches are sorted by token length)")
    embed_max_seq_length: int = Field(
        128, ge=8, description="word pieces kept per text; all-MiniLM-L6-v2 was trained at 128 (its default of 256 is only an inference cap)")
    embed_int8: bool = Field(False, description="int8 dynamic quantisation of the Linear layers: ~1.5× faster on CPU, but "
                             "pair cosines move by ~0.03 (benchmarks/dedup_scale.py --int8-check); off by default")
    embed_cache: bool = Field(True, description="cache test-set embeddings under SAFEKEY_HOME, keyed by model weights + settings + text")
    chunk_rows: int = Field(1024, ge=16, description="rows per similarity block: memory ~ chunk_rows × N")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads for the embedder; None: auto, the cores other processes leave free (ThreadGovernor)")


def default_ngram(n_items: int) -> int:
    """n for a source the reference did not list: larger sources get a smaller (stricter) n."""
    if n_items < 1_000:
        return 8
    if n_items < 20_000:
        return 7
    if n_items < 100_000:
        return 6
    return 5


@dataclass
class Item:
    id: str
    text: str
    source: str


@dataclass
class Removal:
    id: str
    source: str
    step: str
    rule: str
    against: str  # self | test | earlier_source | pool
    matched_id: str
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["score"] is None:
            del d["score"]
        else:
            d["score"] = round(float(d["score"]), 4)
        return d


@dataclass
class DedupResult:
    kept: list[int]
    removals: list[Removal]
    steps: list[dict[str, Any]] = field(default_factory=list)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
