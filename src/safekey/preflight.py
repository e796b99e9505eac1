"""Preflight: what a command will need, checked before it spends hours (`safekey doctor`).

Why: on a real run, a missing API key, an uncached hub id, a wrong endpoint or a CPU-only box
used to surface after generation. Each check returns :class:`Finding` rows (``ok`` / ``warn`` /
``error``); commands raise on the first error before their first item, `safekey doctor` prints
them all.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Level = Literal["ok", "warn", "error"]


@dataclass(frozen=True)
class Finding:
    level: Level
    what: str
    detail: str

    def __post_init__(self) -> None:  # a finding names endpoints and quotes server errors: no credentials
        from .redact import redact_secrets

        object.__setattr__(self, "what", redact_secrets(self.what))
        object.__setattr__(self, "detail", redact_secrets(self.detail))


def check_backend(spec: str, *, base_url: str | None = None, role: str = "model", probe: bool = True) -> list[Finding]:
    """A ``kind:model`` spec: the key in the environment, the endpoint answering, or the weights available."""
    from .llm import parse_spec
    from .models import hub_model_available, resolve_model
    from .types import SafekeyError

    try:
        cfg = parse_spec(spec, base_url=base_url)
    except SafekeyError as e:
        return [Finding("error", role, str(e))]
    if cfg.kind == "openai":
        out = []
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
            out.append(Finding("error", role, f"{spec}: no API key in ${cfg.api_key_env}"))
        url = cfg.base_url or os.environ.get("OPENAI_BASE_URL")
        if url and probe:
            out.append(_probe(url, role))
        return out or [Finding("ok", role, f"{spec}: key present" + (f", endpoint {url}" if url else ""))]
    try:
        path = resolve_model(cfg.model)
    except SafekeyError as e:
        return [Finding("error", role, str(e))]
    if not hub_model_available(path):
        return [Finding("error", role, f"{spec}: {path} is neither a local folder nor in the hub cache (offline)")]
    return [Finding("ok", role, f"{spec}: {'local folder' if Path(path).is_dir() else 'hub id'} {path}")]


def _probe(url: str, role: str) -> Finding:
    """GET {url}/models with a short timeout: is anything answering there?"""
    import httpx2

    try:
        r = httpx2.get(url.rstrip("/") + "/models", timeout=3.0)
    except httpx2.HTTPError as e:
        return Finding("error", role, f"endpoint {url} does not answer ({type(e).__name__})")
    except (httpx2.InvalidURL, ValueError, TypeError) as e:  # e.g. a "/" in a password: the host part is cut there
        return Finding("error", role, f"endpoint {url} is not a valid URL ({type(e).__name__}; "
                                      "percent-encode '/', '@', ':' in a user name or password)")
    level: Level = "ok" if r.status_code < 500 else "error"
    return Finding(level, role, f"endpoint {url} answered HTTP {r.status_code}")


def environment() -> list[Finding]:
    """Accelerators, precision, attention kernels, sandbox, disk: what the machine offers."""
    out: list[Finding] = []
    try:
        import torch

        if torch.cuda.is_available():
            names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            out.append(Finding("ok", "gpu", f"{torch.cuda.device_count()} × {names}"))
            out.append(Finding("ok" if torch.cuda.is_bf16_supported() else "warn", "bf16",
                               "supported" if torch.cuda.is_bf16_supported() else "not supported: training runs in fp32"))
        else:
            out.append(Finding("warn", "gpu", "none: generation and training run on CPU (slow; the papers' setup needs GPUs)"))
    except ImportError:
        out.append(Finding("error", "torch", "not installed"))
    try:
        import flash_attn  # noqa: F401

        out.append(Finding("ok", "flash-attention", "installed"))
    except ImportError:
        out.append(Finding("warn", "flash-attention", "not installed: attention falls back to sdpa"))
    out.append(Finding("ok" if shutil.which("bwrap") else "warn", "sandbox",
                       "bubblewrap present" if shutil.which("bwrap") else "bubblewrap missing: HumanEval runs with weaker isolation"))
    from .paths import home

    h = home()
    h.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(h).free / 2**30
    out.append(Finding("ok" if free > 20 else "warn", "disk", f"{free:.0f} GiB free under {h}"))
    out.append(Finding("ok", "hub", "offline (HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") in ("1", "true") else "online"))
    return out


def cost(items: int, max_new_tokens: int, *, on_gpu: bool) -> list[Finding]:
    """The size of a generation run, and the warning that matters most on CPU."""
    tokens = items * max_new_tokens
    out = [Finding("ok", "cost", f"{items:,} items × {max_new_tokens:,} new tokens ≤ {tokens:,} generated tokens")]
    if not on_gpu and max_new_tokens >= 4096:
        out.append(Finding("warn", "cost", f"--max-new-tokens {max_new_tokens} on CPU: hours per hundred items; "
                                           "use a GPU or a smaller --max-new-tokens for a trial run"))
    return out


def raise_on_error(findings: list[Finding]) -> None:
    from .types import SafekeyError

    bad = [f for f in findings if f.level == "error"]
    if bad:
        raise SafekeyError(f"{bad[0].what}: {bad[0].detail}")


__all__ = ["Finding", "check_backend", "cost", "environment", "raise_on_error"]
