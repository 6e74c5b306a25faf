"""fp8 compute (``fp8=compute``): its refusal where the hardware cannot, and its numerics. torch's CPU
build runs ``torch._scaled_mm`` too, so the fp8 linear is checked here against the float linear; on a
GPU of compute capability 8.9+ the same checks run on CUDA."""

from __future__ import annotations

import pytest
import torch

from model.infinitetalk.fp8 import Fp8Linear, convert_to_fp8_compute, fp8_compute_refusal
from streaming.errors import InputError

# e4m3 keeps 3 mantissa bits: each value rounds by up to 2^-4 relative; over a dot product the errors
# average to a few percent of the output's norm.
LINEAR_TOLERANCE = 0.06
MODEL_TOLERANCE = 0.2  # a whole (tiny, random) DiT: the storage-only fp8 test allows the same
fp8_gpu = pytest.mark.skipif(fp8_compute_refusal(torch.device("cuda")) is not None,
                             reason="needs a CUDA GPU of compute capability 8.9+")


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_linear_is_close_to_the_float_linear(dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 128).to(dtype)
    x = torch.randn(3, 7, 64, dtype=dtype)
    x[0, 0] *= 50  # an outlier token: row-wise scales keep the other tokens' precision
    fp8 = Fp8Linear(linear)
    assert fp8.weight_fp8.dtype == torch.float8_e4m3fn and fp8.weight_scale.shape == (1, 128)
    with torch.no_grad():
        expected, out = linear(x), fp8(x)
    assert out.dtype == dtype and out.shape == expected.shape
    assert 0 < relative(out, expected) < LINEAR_TOLERANCE
    assert relative(out[1:], expected[1:]) < LINEAR_TOLERANCE


def test_fp8_compute_dit_is_close_to_the_float_dit():
    from it_weights import TINY_DIT, official_dit_shapes, random_tensors
    from model.infinitetalk.loading import build_transformer
    from test_infinitetalk_dit import tiny_inputs

    model = build_transformer(TINY_DIT, random_tensors(official_dit_shapes(TINY_DIT), seed=11))
    inputs = tiny_inputs(model, persons=1)
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
