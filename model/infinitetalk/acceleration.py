"""Speed and memory knobs for the DiT, mostly from diffusers: attention backend, fp8 layerwise casting,
fp8 compute, block-level group offload, regional torch.compile.

fp8 storage (``fp8=storage``, or ``true``): weights stored as float8_e4m3fn and up-cast per layer to bf16
for compute (2x less weight memory, 19 GB instead of 38 GB; speed roughly unchanged). fp8 compute
(``fp8=compute``, ``fp8.py``): the blocks' linears multiply in fp8 on the tensor cores of compute capability
8.9+ GPUs (same memory saving, and the fp8 matmul rate). Offload: blocks live on the CPU and stream to the GPU
one group ahead (for GPUs with less memory than the weights). Compile: each repeated block compiled once
(`compile_repeated_blocks`), the first chunk pays the compile time.
"""

from __future__ import annotations

import torch

from model.errors import InputError
from model.infinitetalk.fp8 import convert_to_fp8_compute, fp8_compute_refusal

FP8_MODES = ("off", "storage", "compute")


def fp8_mode(value) -> str:
    """The ``fp8`` option (a mode name, or a bool as before: true = storage) -> off | storage | compute."""
    if isinstance(value, bool) or value is None:
        return "storage" if value else "off"
    if value not in FP8_MODES:
        raise InputError(f"bad fp8 mode {value!r}: accepted are {', '.join(FP8_MODES)} (or true/false)")
    return value

ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage", "flex", "_native_cudnn", "_native_flash",
                      "_native_efficient", "xformers")


def place_transformer(model, device: torch.device, fp8: bool | str = False, offload: bool = False,
                      compile: bool = False, attention: str | None = None):
    if attention:
        if attention not in ATTENTION_BACKENDS:
            raise InputError(f"bad attention backend {attention!r}: accepted are {', '.join(ATTENTION_BACKENDS)} "
                             "(hub backends would download kernels and are not offered)")
        try:
            model.set_attention_backend(attention)
        except (ImportError, RuntimeError, ValueError) as exc:
            raise InputError(f"attention backend {attention!r} is not usable here: {exc}") from None
    mode = fp8_mode(fp8)
    if mode == "compute":
        refusal = fp8_compute_refusal(device)
        if refusal:
            raise InputError(refusal)
        if offload:
            convert_to_fp8_compute(model)  # before the blocks are handed to the offload hooks
    if mode == "storage":
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    if offload and device.type == "cuda":
        model.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1, use_stream=True)
    else:
        model.to(device)
        if mode == "compute":
            convert_to_fp8_compute(model)  # on the GPU: seconds, and the bf16 weights are freed as it goes
    if compile:
        model.compile_repeated_blocks(fullgraph=False)
    return model
