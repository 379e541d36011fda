"""Adapter outputs every backend loads: vLLM's constraints on a PEFT LoRA, and the GGUF LoRA llama.cpp reads.

The GGUF follows what llama.cpp's own converter (``convert_lora_to_gguf.py``) writes: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, the base model's architecture, and per adapted weight two tensors
``<gguf weight name>.lora_a`` (rank × in) and ``.lora_b`` (out × rank) in fp32. Llama-family GGUFs store the query
and key projections with their rows permuted for llama.cpp's rotary layout (``transformers`` undoes that when it
reads a GGUF), so ``lora_b`` of ``q_proj``/``k_proj`` gets the same permutation; a test checks that llama.cpp with
this file and torch with the PEFT folder give the same label log-probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from knowrec.config import LORA_TARGETS, VLLM_LORA_RANKS
from knowrec.errors import ConfigError

__all__ = ["vllm_problems", "write_gguf_lora"]

_GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def vllm_problems(adapter_dir: Path) -> list[str]:
    """What vLLM (``--enable-lora --lora-modules NAME=DIR``) would refuse in a PEFT adapter folder; empty = none.

    Mirrors the checks of vLLM's ``PEFTHelper``: rank among the ranks it serves, ``bias: none``, no DoRA, no
    ``modules_to_save``, no per-module rank or alpha patterns, supported target modules, and the weights file."""
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():
        return [f"{cfg_path} is missing"]
    cfg: dict[str, Any] = json.loads(cfg_path.read_text())
    out: list[str] = []
    if cfg.get("peft_type", "LORA") != "LORA":
        out.append(f"peft_type is {cfg.get('peft_type')!r}, not 'LORA'")
    if cfg.get("r") not in VLLM_LORA_RANKS:
        out.append(f"rank {cfg.get('r')} is not one vLLM serves ({list(VLLM_LORA_RANKS)})")
    if cfg.get("bias", "none") != "none":
        out.append(f"bias is {cfg.get('bias')!r}: vLLM needs 'none' unless started with --enable-lora-bias")
    if cfg.get("use_dora"):
        out.append("DoRA is not supported by vLLM")
    if cfg.get("modules_to_save"):
        out.append(f"modules_to_save {cfg['modules_to_save']} is not supported")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            out.append(f"{key} is not supported")
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    bad = [t for t in targets if t not in LORA_TARGETS]
    if bad or not targets:
        out.append(f"target modules {bad or targets} are not among {list(LORA_TARGETS)}")
    if not any((adapter_dir / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        out.append("no adapter_model.safetensors")
    return out


def _permute(w: Any, n_head: int) -> Any:
    """llama.cpp's row permutation of a Llama query/key projection (``convert_hf_to_gguf.LlamaModel.permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_ARCHITECTURES = {"llama": ("llama", True), "mistral": ("llama", True), "qwen2": ("qwen2", False)}
"""``transformers`` model type → (llama.cpp architecture, whether its converter permutes the query/key rows)."""


def write_gguf_lora(peft_model: Any, path: Path, alpha: float) -> int:
    """Write the LoRA weights of a ``peft`` model as a GGUF LoRA file; returns the number of adapted weights.
    Raises :class:`ConfigError` for a model family whose GGUF layout is not known here (Llama, Mistral, Qwen2 are)."""
    import numpy as np

    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("writing a GGUF adapter needs the gguf package: pip install gguf") from exc
    config = peft_model.get_base_model().config
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in _ARCHITECTURES:
        raise ConfigError(f"no GGUF LoRA layout known for model type {model_type!r} (known: {sorted(_ARCHITECTURES)})")
    architecture, permuted = _ARCHITECTURES[model_type]
    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    pairs: dict[str, dict[str, Any]] = {}
    for name, param in peft_model.named_parameters():
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        # base_model.model.model.layers.27.self_attn.q_proj.lora_A.default.weight
        parts = name.split(".")
        layer = int(parts[parts.index("layers") + 1])
        module = parts[parts.index("lora_A" if ".lora_A." in name else "lora_B") - 1]
        if module not in _GGUF_NAMES:
            raise ConfigError(f"no GGUF name for adapted module {module!r}")
        key = f"blk.{layer}.{_GGUF_NAMES[module]}.weight"
        w = param.detach().float().cpu().numpy()
        if ".lora_B." in name and module in ("q_proj", "k_proj") and permuted:
            w = _permute(w, n_head if module == "q_proj" else n_kv)
        pairs.setdefault(key, {})["a" if ".lora_A." in name else "b"] = np.ascontiguousarray(w, dtype=np.float32)
    if not pairs:
        raise ConfigError("the model has no LoRA weights to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for key in sorted(pairs):
        writer.add_tensor(f"{key}.lora_a", pairs[key]["a"])
        writer.add_tensor(f"{key}.lora_b", pairs[key]["b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return len(pairs)
