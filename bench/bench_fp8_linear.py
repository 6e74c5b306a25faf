"""Where the time of fp8 compute goes: the DiT's linear shapes at 480x480 (18,900 tokens), bf16 against
``Fp8Linear`` (row-wise quantization of the activation + ``torch._scaled_mm``), its parts timed alone, and
the peak memory of converting the full 14B DiT (bf16 -> fp8) on the GPU.

The 14B chunk benchmark found fp8 compute slower than bf16 on an H200 (DiT forward 1.88 s against 1.68 s):
this separates the quantization (memory-bound) from the fp8 matrix product. ``Fp8Linear`` on CUDA runs the
compiled quantization (the "torch.compile" row); the eager rows show what it replaced.

    python bench/bench_fp8_linear.py            # CUDA, capability 8.9+
    python bench/bench_fp8_linear.py --smoke    # tiny shapes on the CPU, to check the script
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from model.infinitetalk.fp8 import FP8, FP8_MAX, Fp8Linear, _rowwise, convert_to_fp8_compute, fp8_compute_refusal

TOKENS = 18900  # 21 latent frames x 30 x 30 patches at 480x480
SHAPES = {"attention (5120 -> 5120)": (5120, 5120), "FFN up (5120 -> 13824)": (5120, 13824),
          "FFN down (13824 -> 5120)": (13824, 5120)}


def rowwise_before(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantization as it was before this benchmark (six passes), for the comparison."""
    scale = (x.detach().abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def median_ms(job, device: torch.device, repeats: int) -> float:
    for _ in range(3):
        job()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            job()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            job()
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def linear_table(device: torch.device, tokens: int, shapes: dict, repeats: int) -> None:
    print(f"{'shape':<26} {'variant':<34} {'ms':>8} {'TFLOP/s':>8} {'rel.err':>8}")
    compiled = torch.compile(_rowwise, dynamic=False) if device.type == "cuda" else None
    for label, (k, n) in shapes.items():
        torch.manual_seed(0)
        linear = torch.nn.Linear(k, n, device=device, dtype=torch.bfloat16)
        x = torch.randn(tokens, k, device=device, dtype=torch.bfloat16)
        fp8 = Fp8Linear(linear)
        xq, xs = _rowwise(x)
        flops = 2 * tokens * k * n
        with torch.no_grad():
            reference = linear(x)
            variants = {
                "bf16 F.linear": (lambda: linear(x), reference),
                "fp8 Fp8Linear (quantize + mm)": (lambda: fp8(x), None),
                "  quantize, 3 passes (now)": (lambda: _rowwise(x), None),
                "  quantize, 6 passes (before)": (lambda: rowwise_before(x), None),
                "  _scaled_mm row-wise alone": (lambda: torch._scaled_mm(
                    xq, fp8.weight_fp8.t(), scale_a=xs, scale_b=fp8.weight_scale, bias=fp8.bias,
                    out_dtype=torch.bfloat16), None),
            }
            if device.type == "cuda":
                variants["  _scaled_mm row-wise, fast accum"] = (lambda: torch._scaled_mm(
                    xq, fp8.weight_fp8.t(), scale_a=xs, scale_b=fp8.weight_scale, bias=fp8.bias,
                    out_dtype=torch.bfloat16, use_fast_accum=True), None)
                one = torch.ones((), device=device)
                variants["  _scaled_mm per-tensor, fast accum"] = (lambda: torch._scaled_mm(
                    xq, fp8.weight_fp8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                    use_fast_accum=True), None)
                variants["  quantize, torch.compile"] = (lambda: compiled(x), None)
            for name, (job, _) in variants.items():
                try:
                    ms = median_ms(job, device, repeats)
                    out = job()
                except Exception as exc:  # a variant this torch build lacks: say so, time the rest
                    print(f"{label:<26} {name:<34} {'n/a':>8}  {type(exc).__name__}: {str(exc).splitlines()[0][:60]}")
                    continue
                is_mm = not name.startswith("  quantize")
                rate = f"{flops / ms / 1e9:8.0f}" if is_mm else f"{'':>8}"
                error = (f"{relative(out, reference):8.4f}" if is_mm and "per-tensor" not in name
                         and "bf16" not in name else f"{'':>8}")
                print(f"{label:<26} {name:<34} {ms:8.3f} {rate} {error}", flush=True)


def conversion_memory() -> None:
    """Peak GPU memory while converting the full 14B DiT's blocks to fp8 (uninitialized weights)."""
    sys.path.insert(0, "bench")
    from bench_infinitetalk_gpu import FULL_14B

    from model.infinitetalk.transformer import InfiniteTalkTransformer3DModel, transformer_config_from_official

    with torch.device("meta"):
        model = InfiniteTalkTransformer3DModel(**transformer_config_from_official(FULL_14B)).to(torch.bfloat16)
    model.to_empty(device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    count = convert_to_fp8_compute(model)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    print(f"14B DiT conversion to fp8 compute: {count} linears in {seconds:.1f} s; allocated {before:.1f} GiB bf16 -> "
          f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB after, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per variant (median), after 3 warm-ups")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the script")
    args = parser.parse_args()
    if args.smoke:
        linear_table(torch.device("cpu"), 64, {"tiny (64 -> 128)": (64, 128)}, 2)
        return 0
    refusal = fp8_compute_refusal(torch.device("cuda"))
    if refusal:
        print(f"bench_fp8_linear: {refusal}", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; {TOKENS} tokens, bf16 activations")
    linear_table(torch.device("cuda"), TOKENS, SHAPES, args.repeats)
    conversion_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())
