"""Speed and memory knobs for the DiT, all from diffusers: attention backend, fp8 layerwise casting,
block-level group offload, regional torch.compile.

fp8: weights stored as float8_e4m3fn and up-cast per layer to bf16 for compute (2x less weight memory,
19 GB instead of 38 GB; speed roughly unchanged). Offload: blocks live on the CPU and stream to the GPU
one group ahead (for GPUs with less memory than the weights). Compile: each repeated block compiled once
(`compile_repeated_blocks`), the first chunk pays the compile time.
"""

from __future__ import annotations

import torch

from model.errors import InputError

ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage", "flex", "_native_cudnn", "_native_flash",
                      "_native_efficient", "xformers")


def place_transformer(model, device: torch.device, fp8: bool = False, offload: bool = False,
                      compile: bool = False, attention: str | None = None):
    if attention:
        if attention not in ATTENTION_BACKENDS:
            raise InputError(f"bad attention backend {attention!r}: accepted are {', '.join(ATTENTION_BACKENDS)} "
                             "(hub backends would download kernels and are not offered)")
        try:
            model.set_attention_backend(attention)
        except (ImportError, RuntimeError, ValueError) as exc:
            raise InputError(f"attention backend {attention!r} is not usable here: {exc}") from None
    if fp8:
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    if offload and device.type == "cuda":
        model.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1, use_stream=True)
    else:
        model.to(device)
    if compile:
        model.compile_repeated_blocks(fullgraph=False)
    return model
