"""The GPUs the capacity planner knows: vendors' published peak figures, per GPU. Bad names raise
ValueError with one line listing what is accepted (the CLI shows it as an input error).

Compute figures are dense (no 2:4 sparsity), tensor-core, with FP32 accumulation (what PyTorch's bf16
and fp8 matmuls use). Interconnect is the per-direction bandwidth one GPU has to its peers (an
all-to-all sends and receives at once), i.e. half the bidirectional figure NVIDIA quotes.

Sources (NVIDIA datasheets and architecture whitepapers):
- A100 SXM4 80GB: A100 datasheet: BF16 312 TFLOPS dense (624 sparse), no FP8; HBM2e 2,039 GB/s;
  NVLink 3 600 GB/s bidirectional.
- H100 SXM5 80GB: H100 datasheet: BF16 989.4 TFLOPS dense (1,979 sparse), FP8 1,978.9 dense (3,958
  sparse); HBM3 3.35 TB/s; NVLink 4 900 GB/s bidirectional.
- H200 SXM 141GB: H200 datasheet: the H100's compute; HBM3e 4.8 TB/s; NVLink 900 GB/s.
- B200 (HGX, 1,000 W): HGX B200 datasheet: BF16 2.25 PFLOPS dense (4.5 sparse), FP8 4.5 PFLOPS dense
  (9 sparse); 180 GB HBM3e at 8 TB/s (DGX B200: 1,440 GB and 64 TB/s over 8 GPUs); NVLink 5 1.8 TB/s
  bidirectional.
- L40S: L40S datasheet: BF16 362.05 TFLOPS dense (733 sparse), FP8 733 dense (1,466 sparse); 48 GB GDDR6
  at 864 GB/s; no NVLink: PCIe Gen4 x16, 64 GB/s bidirectional.
- RTX 4090: Ada Lovelace architecture whitepaper, appendix: BF16 with FP32 accumulate 165.2 TFLOPS dense
  (330.4 sparse), FP8 with FP32 accumulate 330.3 dense; 24 GB GDDR6X at 1,008 GB/s; PCIe Gen4 x16 (no
  NVLink, and GeForce cards have no peer-to-peer: traffic goes through the host).
- RTX 5090: RTX Blackwell architecture whitepaper, appendix: FP16/BF16 with FP32 accumulate 209.5
  TFLOPS dense (419 sparse), FP8 with FP32 accumulate 419 dense; 32 GB GDDR7 at 1,792 GB/s; PCIe Gen5
  x16, 128 GB/s bidirectional (no NVLink).
"""

from __future__ import annotations

import dataclasses
import re

TERA = 1e12


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    kind: str  # the short name used on the command line (h100)
    label: str  # what the vendor calls it
    bf16_flops: float  # dense tensor FLOP/s
    fp8_flops: float | None  # dense tensor FLOP/s; None where the GPU has no fp8 tensor cores
    memory_bytes: float
    memory_bandwidth: float  # bytes/s
    interconnect: float  # bytes/s per direction, GPU to its peers
    link: str  # what the interconnect is
    names: tuple[str, ...]  # substrings of torch.cuda.get_device_name() that identify it

    def peak(self, dtype: str) -> float:
        if dtype == "fp8":
            if self.fp8_flops is None:
                raise ValueError(f"{self.label} has no fp8 tensor cores: use --dtype bf16")
            return self.fp8_flops
        return self.bf16_flops


GPUS: dict[str, GpuSpec] = {spec.kind: spec for spec in (
    GpuSpec("a100", "A100 SXM4 80GB", 312 * TERA, None, 80e9, 2039e9, 300e9, "NVLink 3", ("a100",)),
    GpuSpec("h100", "H100 SXM5 80GB", 989.4 * TERA, 1978.9 * TERA, 80e9, 3350e9, 450e9, "NVLink 4",
            ("h100", "h800")),
    GpuSpec("h200", "H200 SXM 141GB", 989.4 * TERA, 1978.9 * TERA, 141e9, 4800e9, 450e9, "NVLink 4", ("h200",)),
    GpuSpec("b200", "B200 (HGX)", 2250 * TERA, 4500 * TERA, 180e9, 8000e9, 900e9, "NVLink 5", ("b200",)),
    GpuSpec("l40s", "L40S", 362.05 * TERA, 733 * TERA, 48e9, 864e9, 32e9, "PCIe Gen4 x16", ("l40s",)),
    GpuSpec("rtx4090", "GeForce RTX 4090", 165.2 * TERA, 330.3 * TERA, 24e9, 1008e9, 32e9, "PCIe Gen4 x16",
            ("4090",)),
    GpuSpec("rtx5090", "GeForce RTX 5090", 209.5 * TERA, 419 * TERA, 32e9, 1792e9, 64e9, "PCIe Gen5 x16",
            ("5090",)),
)}


def gpu(kind: str) -> GpuSpec:
    spec = GPUS.get(str(kind).strip().lower().replace(" ", "").replace("-", ""))
    if spec is None:
        raise ValueError(f"unknown GPU {kind!r}: accepted are {', '.join(GPUS)}")
    return spec


def match_gpu_name(name: str) -> GpuSpec | None:
    """The GPU a ``torch.cuda.get_device_name()`` string names (e.g. 'NVIDIA H100 80GB HBM3'), if known."""
    text = name.lower()
    for spec in GPUS.values():
        if any(part in text for part in spec.names):
            return spec
    return None


def parse_gpus(text: str) -> tuple[GpuSpec, int]:
    """``KINDxN`` (e.g. ``h100x8``) -> (GPU, count); a one-line error listing the kinds otherwise."""
    match = re.fullmatch(r"\s*([a-z0-9]+)\s*x\s*(\d+)\s*", str(text).lower())
    if match is None or match.group(1) not in GPUS or not 1 <= int(match.group(2)) <= 64:
        raise ValueError(f"bad simulated hardware {text!r}: accepted is KINDxN with N from 1 to 64, "
                         f"KIND one of {', '.join(GPUS)} (e.g. h100x8)")
    return GPUS[match.group(1)], int(match.group(2))
