"""The sequence-parallel DiT (model/infinitetalk/parallel.py) on gloo ranks spawned on this CPU: the public
fixtures at N=2 and N=4, a 4-head model in every mode (two speakers, uneven slices), a two-chunk streaming
loop and the generator's automatic sharding against the single-process results."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from it_weights import TINY_DIT, official_dit_shapes, random_tensors, write_weights
from model.infinitetalk.audio_attention import BACKGROUND_POSITION, PERSON1_SPAN, PERSON2_SPAN, route_positions
from model.infinitetalk.local_ranks import run_ranks
from model.infinitetalk.parallel import (TokenShard, parallel_degrees, shard_transformer, slice_sizes,
                                        unshard_transformer)

ROOT = Path(__file__).parents[1]
PUBLIC = ROOT / "tests" / "fixtures" / "conformance" / "public"
DIT_CASES = ("single", "multi", "null_audio")
FOUR_HEADS = {**TINY_DIT, "num_heads": 4}


# -- arithmetic, no ranks ------------------------------------------------------------------------------
def test_degrees_per_mode():
    assert parallel_degrees("ulysses", 8, 40) == (8, 1)
    assert parallel_degrees("ulysses", 4, 2) == (2, 2)  # heads do not divide: Ulysses x ring
    assert parallel_degrees("ulysses", 3, 40) == (1, 3)  # no common divisor: ring
    assert parallel_degrees("hybrid", 8, 40) == (4, 2) and parallel_degrees("hybrid", 4, 4) == (2, 2)
    assert parallel_degrees("ring", 4, 40) == (1, 4)
    with pytest.raises(ValueError, match="accepted are ulysses, ring, hybrid"):
        parallel_degrees("tensor", 2, 40)
    with pytest.raises(ValueError, match="at least 2 ranks"):
        parallel_degrees("ring", 1, 40)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.integers(1, 9))
def test_slices_cover_the_window_and_pad_to_whole_frames(world, frame_tokens, frames):
    length = frame_tokens * frames
    if length < world:
        with pytest.raises(ValueError, match="cannot be split"):
            slice_sizes(length, world)
        return
    sizes = slice_sizes(length, world)
    assert sizes == tuple(len(part) for part in torch.arange(length).tensor_split(world))
    start = 0
    for size in sizes:
        shard = TokenShard(None, length, frame_tokens, start, start + size, sizes)
        frame_of_token = torch.arange(shard.start, shard.stop) // frame_tokens - shard.first_frame
        assert frame_of_token.min() == 0 and frame_of_token.max() == shard.frames - 1
        assert shard.pad_before + size + shard.pad_after == shard.frames * frame_tokens
        assert 0 <= shard.pad_before < frame_tokens and 0 <= shard.pad_after < frame_tokens
        start += size
    assert start == length


def _routing_reference(attention_map: torch.Tensor) -> torch.Tensor:
    """The official per-item routing loop (rescale each person's row by its own min and max)."""
    out = []
    for item in attention_map:
        rows = []
        for row, span in ((item[0], PERSON1_SPAN), (item[1], PERSON2_SPAN)):
            rows.append((row - row.min()) / (row.max() - row.min() + 1e-8) * (span[1] - span[0]) + span[0])
        candidates = torch.stack([*rows, torch.full_like(rows[0], BACKGROUND_POSITION)])
        out.append(candidates.gather(0, item.argmax(0, keepdim=True))[0])
    return torch.stack(out)


def test_routing_on_slices_with_the_global_range_equals_the_whole():
    attention_map = torch.rand(2, 3, 45, generator=torch.Generator().manual_seed(0))
    whole = route_positions(attention_map)
    assert torch.equal(whole, _routing_reference(attention_map))
    low, high = attention_map[:, :2].amin(-1), attention_map[:, :2].amax(-1)
    pieces = [route_positions(part, lambda lo, hi: (low, high)) for part in attention_map.tensor_split(4, dim=2)]
    assert torch.equal(torch.cat(pieces, dim=1), whole)
    local = route_positions(attention_map[:, :, :10])  # a slice's own range differs: why it is reduced
    assert not torch.equal(local, whole[:, :10])


# -- ranks -----------------------------------------------------------------------------------------------
def _public_dit_errors(mode: str) -> dict[str, float]:
    from model.infinitetalk.conformance_dit import load_transformer, official_forward

    model = load_transformer(PUBLIC / "dit")
    shard_transformer(model, mode)
    errors = {}
    for case in DIT_CASES:
        inputs = load_file(PUBLIC / "dit" / f"{case}_inputs.safetensors")
        expected = load_file(PUBLIC / "dit" / f"{case}_output.safetensors")["out"]
        errors[f"{mode}/{case}"] = (official_forward(model, inputs) - expected).abs().max().item()
    return errors


def _window_inputs(persons: int, frames: int, height: int, width: int, seed: int) -> dict:
    """Random DiT inputs in the official call convention (latent ``frames x height x width``)."""
    g = torch.Generator().manual_seed(seed)
    pixel_frames = 1 + 4 * (frames - 1)
    masks = torch.zeros(3, height, width)
    masks[0, :, : width // 2], masks[1, :, width // 2 :] = 1, 1
    masks[0, : height // 3], masks[1, : height // 3] = 0, 0
    masks[2] = 1 - masks[0] - masks[1]
    return {"x": torch.randn(16, frames, height, width, generator=g), "t": torch.tensor([700.0]),
            "context": torch.randn(20, TINY_DIT["text_dim"], generator=g),
            "clip_fea": torch.randn(1, 257, 1280, generator=g),
            "y": torch.randn(1, 20, frames, height, width, generator=g),
            "audio": torch.randn(persons, pixel_frames, 5, TINY_DIT["audio_layers"], TINY_DIT["audio_channels"],
                                 generator=g),
            "ref_target_masks": masks}


def _four_head_errors() -> dict[str, float]:
    """A 4-head model in each mode vs its unsharded forward on this rank: one and two speakers on an even
    window (3 x 8 x 12 latents: 72 tokens) and an uneven one (3 x 6 x 10: 45 tokens, slices straddle frames)."""
    from model.infinitetalk.conformance_dit import official_forward
    from model.infinitetalk.loading import build_transformer

    model = build_transformer(FOUR_HEADS, random_tensors(official_dit_shapes(FOUR_HEADS), seed=11))
    windows = {"even/one": _window_inputs(1, 3, 8, 12, 1), "even/two": _window_inputs(2, 3, 8, 12, 2),
               "uneven/one": _window_inputs(1, 3, 6, 10, 3), "uneven/two": _window_inputs(2, 3, 6, 10, 4)}
    expected = {name: official_forward(model, inputs) for name, inputs in windows.items()}
    batched = _two_branches(model, windows["uneven/two"])
    errors = {}
    for mode in ("ulysses", "ring", "hybrid"):
        parallel = shard_transformer(model, mode)
        for name, inputs in windows.items():
            errors[f"{parallel.mode}/{name}"] = (official_forward(model, inputs) - expected[name]).abs().max().item()
        got = _two_branches(model, windows["uneven/two"])
        errors[f"{parallel.mode}/uneven/two/batched"] = (got - batched).abs().max().item()
        unshard_transformer(model)
    return errors


def _two_branches(model, inputs: dict) -> torch.Tensor:
    """Two guidance branches in one batch (the generator's batch_cfg): two texts, the same latents."""
    text = torch.stack([inputs["context"], -inputs["context"]])
    return model(inputs["x"][None].expand(2, -1, -1, -1, -1), inputs["t"].expand(2), text,
                 inputs["clip_fea"].expand(2, -1, -1), inputs["y"].expand(2, -1, -1, -1, -1),
                 model.encode_audio(inputs["audio"]), inputs["ref_target_masks"])[0]


def _two_chunk_loop(steps: int | None = None) -> torch.Tensor:
    """The official streaming loop (ChunkPipeline) over two chunks of the public pipeline set."""
    from model.infinitetalk.conformance import read_json
    from model.infinitetalk.conformance_pipeline import load_fixture, load_pipeline, official_loop

    part = PUBLIC / "pipeline"
    fixture = load_fixture(part)
    fixture = dataclasses.replace(fixture, audio=[fixture.audio[0][:29]])  # chunks at 0 and 12, the last padded
    pipeline = load_pipeline(part, read_json(part / "config.json"))
    if dist.is_initialized():
        shard_transformer(pipeline.transformer, "ulysses")
    record = official_loop(pipeline, fixture)
    assert len(record.chunks) == 2
    return record.video


def _generator_chunk(weights: str) -> tuple[str, np.ndarray]:
    """build_generator on tiny weights (sharded by itself under torch.distributed) and one chunk."""
    from model.base import ChunkRequest
    from model.infinitetalk.generator import build_generator

    generator = build_generator(weights=weights, device="cpu", steps=1, audio_context=1.0, audio_lookahead=0.5)
    parallel = generator.components.transformer._sequence_parallel
    rng = np.random.default_rng(0)
    request = ChunkRequest(index=0, start_frame=0, num_frames=9, audio=(rng.standard_normal(16000 * 2) * 0.1)
                           .astype(np.float32), audio_offset=0, reference_frame=rng.integers(0, 255, (48, 64, 3),
                                                                                              dtype=np.uint8),
                           reference_index=0, audio_end_frame=30, seed=3)
    return (parallel.describe() if parallel else "single"), generator.generate(request).frames


def _two_ranks(weights: str) -> dict:
    with torch.no_grad():
        errors = {**_public_dit_errors("ulysses"), **_public_dit_errors("ring")}
        return {"errors": errors, "loop": _two_chunk_loop(), "generator": _generator_chunk(weights)}


def _four_ranks() -> dict:
    with torch.no_grad():
        return {**_public_dit_errors("ring"), **_public_dit_errors("hybrid"), **_four_head_errors()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return str(write_weights(tmp_path_factory.mktemp("weights")))


def test_two_ranks_public_dit_streaming_loop_and_generator(weights):
    torch.set_num_threads(1)  # as each rank: another thread count alone moves the loop's video by 3e-5
    results = run_ranks(_two_ranks, 2, weights, threads=1)
    for rank in results:
        for name, error in rank["errors"].items():
            assert error <= 1e-5, (name, error)  # the fixture README expects 1e-5 (tolerance 1e-4)
    assert set(results[0]["errors"]) == {f"{m}/{c}" for m in ("ulysses", "ring") for c in DIT_CASES}
    with torch.no_grad():
        loop = _two_chunk_loop()
    for rank in results:
        assert rank["loop"].shape == loop.shape and (rank["loop"] - loop).abs().max() <= 1e-5
    described, frames = results[0]["generator"]
    assert described == "ulysses: ulysses 2 x ring 1 over 2 ranks"
    assert results[1]["generator"][0] == described and np.array_equal(results[1]["generator"][1], frames)
    with torch.no_grad():
        single, alone = _generator_chunk(weights)
    assert single == "single" and frames.shape == (9, 48, 64, 3)
    assert np.array_equal(frames, alone)  # measured: the sharded fp32 run is bit-identical here


def test_four_ranks_every_mode_two_speakers_uneven():
    results = run_ranks(_four_ranks, 4, threads=1)
    expected = {f"{m}/{c}" for m in ("ring", "hybrid") for c in DIT_CASES}
    modes = ("ulysses", "ring", "hybrid")
    expected |= {f"{m}/{w}/{p}" for m in modes for w in ("even", "uneven") for p in ("one", "two")}
    expected |= {f"{m}/uneven/two/batched" for m in modes}
    for rank in results:
        assert set(rank) == expected
        for name, error in rank.items():
            assert error <= 1e-5, (name, error)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "server.cli", "conformance", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=1800)


def test_cli_refuses_a_bad_mode():
    result = _cli(str(PUBLIC), "--parallel", "2", "--parallel-mode", "tensor")
    assert result.returncode == 2 and "invalid choice: 'tensor'" in result.stderr


@pytest.mark.slow
def test_cli_public_set_on_two_ranks():
    result = _cli(str(PUBLIC), "--parallel", "2", "--threads", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "max_abs=" in line]
    assert lines and all(line.split()[3] == "OK" for line in lines)
    names = {line.split()[0] for line in lines}
    assert {"public/dit/multi/out", "public/pipeline/free/video", "public/encoders/vae/decoded"} <= names
    assert "DiT sharded: ulysses: ulysses 2 x ring 1 over 2 ranks (gloo)" in result.stdout
    assert result.stdout.splitlines()[-1].endswith("0 failed")


def test_generator_refuses_a_bad_parallel_mode(weights):
    from model.infinitetalk.generator import build_generator
    from streaming.errors import InputError

    with pytest.raises(InputError, match="bad parallel_mode 'tensor': accepted are ulysses, ring, hybrid"):
        build_generator(weights=weights, device="cpu", parallel_mode="tensor")
