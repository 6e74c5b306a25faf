"""fp8 compute (``fp8=compute``): its refusal where the hardware cannot, and its numerics. torch's CPU
build runs ``torch._scaled_mm`` too, so the fp8 linear is checked here against the float linear; on a
GPU of compute capability 8.9+ the same checks run on CUDA."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.infinitetalk import fp8 as fp8_module
from model.infinitetalk.fp8 import (FP8_MAX, Fp8Linear, _fused_rowwise, _rowwise, convert_to_fp8_compute,
                                   fp8_compute_refusal)
from streaming.errors import InputError

# e4m3 keeps 3 mantissa bits: each value rounds by up to 2^-4 relative; over a dot product the errors
# average to a few percent of the output's norm.
LINEAR_TOLERANCE = 0.06
MODEL_TOLERANCE = 0.2  # a whole (tiny, random) DiT: the storage-only fp8 test allows the same
fp8_gpu = pytest.mark.skipif(fp8_compute_refusal(torch.device("cuda")) is not None,
                             reason="needs a CUDA GPU of compute capability 8.9+")


def cpu_rowwise_refusal() -> str | None:
    """Why this torch's CPU ``_scaled_mm`` cannot check the numerics, or None. Row-wise scales on the CPU
    are recent: torch 2.11's CPU build takes per-tensor scales only (seen on the H200 machine's image)."""
    a = torch.ones(2, 16).to(torch.float8_e4m3fn)
    b = torch.ones(16, 16).to(torch.float8_e4m3fn).t()
    try:
        torch._scaled_mm(a, b, scale_a=torch.ones(2, 1), scale_b=torch.ones(1, 16), out_dtype=torch.float32)
    except RuntimeError as exc:
        return f"torch {torch.__version__}: the CPU _scaled_mm refuses row-wise scales ({str(exc).splitlines()[0][:80]})"
    return None


# the numerics on every device that can run them: the CPU where its torch build can, an fp8 GPU
DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(cpu_rowwise_refusal() is not None,
                                                        reason=str(cpu_rowwise_refusal()))),
           pytest.param("cuda", marks=[pytest.mark.gpu, fp8_gpu])]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_fp8_compute_is_refused_on_the_cpu_in_one_line(tmp_path):
    from it_weights import TINY_DIT, official_dit_shapes, random_tensors
    from model.infinitetalk.acceleration import place_transformer
    from model.infinitetalk.generator import build_generator
    from model.infinitetalk.loading import build_transformer

    message = fp8_compute_refusal(torch.device("cpu"))
    assert message.startswith("fp8 compute needs an NVIDIA GPU of compute capability 8.9 or newer")
    assert message.endswith("this device is cpu") and "\n" not in message
    model = build_transformer(TINY_DIT, random_tensors(official_dit_shapes(TINY_DIT), seed=11))
    with pytest.raises(InputError, match="this device is cpu"):
        place_transformer(model, torch.device("cpu"), fp8="compute")
    with pytest.raises(InputError, match="this device is cpu"):  # before any weights are read
        build_generator(weights=str(tmp_path), device="cpu", fp8="compute")
    with pytest.raises(InputError, match="bad fp8 mode 'fast'"):
        place_transformer(model, torch.device("cpu"), fp8="fast")


def test_fp8_option_values_from_the_command_line():
    from model.infinitetalk.generator import _coerce

    assert _coerce("fp8", "compute", False) == "compute"
    assert _coerce("fp8", "Storage", False) == "storage"
    assert _coerce("fp8", "true", False) is True  # as before: true = storage
    with pytest.raises(InputError, match="option fp8"):
        _coerce("fp8", "fast", False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_linear_is_close_to_the_float_linear(dtype, device):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 128).to(device, dtype)
    x = torch.randn(3, 7, 64, dtype=dtype).to(device)
    x[0, 0] *= 50  # an outlier token: row-wise scales keep the other tokens' precision
    fp8 = Fp8Linear(linear)
    assert fp8.weight_fp8.dtype == torch.float8_e4m3fn and fp8.weight_scale.shape == (1, 128)
    with torch.no_grad():
        expected, out = linear(x), fp8(x)
    assert out.dtype == dtype and out.shape == expected.shape
    assert 0 < relative(out, expected) < LINEAR_TOLERANCE
    assert relative(out[1:], expected[1:]) < LINEAR_TOLERANCE


@pytest.mark.parametrize("device", DEVICES)
def test_fp8_compute_dit_is_close_to_the_float_dit(device):
    from it_weights import TINY_DIT, official_dit_shapes, random_tensors
    from model.infinitetalk.loading import build_transformer
    from test_infinitetalk_dit import tiny_inputs

    model = build_transformer(TINY_DIT, random_tensors(official_dit_shapes(TINY_DIT), seed=11))
    inputs = {k: v.to(device) for k, v in tiny_inputs(model, persons=1).items()}
    model.to(device)
    with torch.no_grad():
        reference = model(**inputs)[0]
        converted = convert_to_fp8_compute(model)
        out = model(**inputs)[0]
    assert converted == 2 * 15  # per block: self-attention 4, cross-attention 6, FFN 2, audio attention 3
    assert isinstance(model.blocks[0].attn1.to_q, Fp8Linear) and isinstance(model.proj_out, torch.nn.Linear)
    assert 0 < relative(out, reference) < MODEL_TOLERANCE


@pytest.mark.gpu
@fp8_gpu
def test_fp8_linear_on_cuda():
    torch.manual_seed(0)
    linear = torch.nn.Linear(5120, 13824, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(2, 300, 5120, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        assert relative(Fp8Linear(linear)(x), linear(x)) < LINEAR_TOLERANCE


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 40), exponent=st.integers(-30, 30),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**31 - 1))
def test_rowwise_quantization_stays_in_the_fp8_range(rows, cols, exponent, dtype, seed):
    """No clamp before the cast: the largest value of each row must land on 448, never past it (e4m3fn
    has no infinity: past 464 a cast gives NaN), and every value within e4m3's rounding of x."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((rows, cols)) * 10.0 ** exponent).to(dtype)
    x[0] = 0  # an all-zero row keeps a finite scale
    values, scale = _rowwise(x)
    back = values.float()
    assert values.dtype == torch.float8_e4m3fn and scale.shape == (rows, 1) and scale.dtype == torch.float32
    assert torch.isfinite(back).all() and back.abs().max() <= FP8_MAX
    assert (back[0] == 0).all()
    unclamped = x.float().abs().amax(dim=-1) >= FP8_MAX * 1e-12  # rows above the scale's floor
    assert torch.equal(back.abs().amax(dim=-1)[unclamped], torch.full_like(back[:, 0][unclamped], FP8_MAX))
    # e4m3: 3 mantissa bits, relative rounding 2^-4 (1/16) of each value, or an absolute 2^-9 near zero
    error = (back * scale - x.float()).abs()
    assert (error <= x.float().abs() / 16 + scale * 2.0 ** -9 + 1e-30).all()


def test_conversion_frees_each_bf16_linear_as_it_goes(monkeypatch):
    """The model never holds the bf16 and fp8 copies of all its linears at once (the 14B DiT's peak)."""
    model = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(5)])
    originals = [weakref.ref(layer) for layer in model]
    alive_at_each_conversion = []

    class CountingFp8Linear(Fp8Linear):
        def __init__(self, linear):
            alive_at_each_conversion.append(sum(ref() is not None for ref in originals))
            super().__init__(linear)

    monkeypatch.setattr(fp8_module, "Fp8Linear", CountingFp8Linear)
    assert convert_to_fp8_compute(model, prefix="") == 5
    assert alive_at_each_conversion == [5, 4, 3, 2, 1]  # the k-th conversion: the k-1 before it are gone
    assert all(ref() is None for ref in originals)


@pytest.mark.gpu
@fp8_gpu
@pytest.mark.parametrize("width", [5120, 13824])
def test_fused_quantization_on_cuda_matches_the_eager_one(width):
    """The compiled quantization (what Fp8Linear runs on CUDA) computes the eager one's values and scales."""
    x = torch.randn(300, width, device="cuda", dtype=torch.bfloat16) * torch.rand(300, 1, device="cuda") * 10
    eager_values, eager_scale = _rowwise(x)
    fused_values, fused_scale = _fused_rowwise()(x)
    assert fused_values.dtype == torch.float8_e4m3fn and torch.allclose(fused_scale, eager_scale, rtol=1e-6)
    fused, eager = fused_values.float(), eager_values.float()
    assert torch.isfinite(fused).all()
    # the compiled kernel rounds a few values to the neighbouring e4m3 value (3 mantissa bits: a step of at
    # most 1/8 of the value, 2^-9 near zero); first seen on an H200 as a relative difference of 1.4e-3
    assert ((fused - eager).abs() <= torch.maximum(fused.abs(), eager.abs()) / 8 + 2.0 ** -9).all()
    assert (fused != eager).float().mean() < 0.01
