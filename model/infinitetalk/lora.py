"""Merging LoRAs into the DiT weights with the official semantics (``wan/wan_lora.py``, spec §6.5).

Keys ``diffusion_model.<param>.lora_down.weight`` / ``.lora_up.weight`` add ``scale * up @ down`` to
``<param>.weight``; ``.diff`` adds ``scale * diff`` to the weight and ``.diff_b`` to the bias. There is no
alpha/rank normalisation (``.alpha`` keys are ignored), as in the official code; the default scale is
1.2. ``lora_A``/``lora_B`` names are accepted as down/up. The product is formed in float32 and added to
the stored weight (the official code forms it in bf16). Parameter names are the official ones and are
mapped to this model's.
"""

from __future__ import annotations

import os

import torch

from model.infinitetalk.convert import strip_prefix, transformer_key
from model.errors import InputError

DEFAULT_SCALE = 1.2
DOWN_UP = ((".lora_down.weight", ".lora_up.weight"), (".lora_A.weight", ".lora_B.weight"))


def lora_deltas(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, ...]]:
    """Official parameter name -> the LoRA keys that update it."""
    updates: dict[str, tuple[str, ...]] = {}
    for key in state:
        if not key.startswith("diffusion_model."):
            continue
        for down, up in DOWN_UP:
            if key.endswith(down) and key.replace(down, up) in state:
                updates[strip_prefix(key[: -len(down)]) + ".weight"] = (key, key.replace(down, up))
        if key.endswith(".diff_b"):
            updates[strip_prefix(key[: -len(".diff_b")]) + ".bias"] = (key,)
        elif key.endswith(".diff"):
            updates[strip_prefix(key[: -len(".diff")]) + ".weight"] = (key,)
    return updates


@torch.no_grad()
def merge_lora(model: torch.nn.Module, path: str | os.PathLike, scale: float = DEFAULT_SCALE) -> int:
    """Merge the LoRA file into ``model`` in place; returns the number of parameters changed."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"LoRA file not found: {path} (give a .safetensors LoRA for Wan2.1 14B)")
    state = load_file(path)
    updates = lora_deltas(state)
    params = dict(model.named_parameters())
    unknown = [name for name in updates if transformer_key(name) not in params]
    if not updates or unknown:
        detail = f"unknown parameters {', '.join(unknown[:3])}" if unknown else "no diffusion_model.* LoRA keys"
        raise InputError(f"LoRA {path} does not fit the InfiniteTalk DiT: {detail}")
    for name, keys in updates.items():
        param = params[transformer_key(name)]
        if len(keys) == 2:
            down, up = (state[k].to(param.device, torch.float32) for k in keys)
            delta = (up.flatten(1) @ down.flatten(1)).view(param.shape)
        else:
            delta = state[keys[0]].to(param.device, torch.float32).view(param.shape)
        param.copy_((param.float() + scale * delta).to(param.dtype))
    return len(updates)
