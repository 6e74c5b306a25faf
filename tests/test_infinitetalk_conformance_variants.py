"""The conformance loop driver under settings other than the public set's (hidden sets differ in sizes,
aspect ratios, head counts, step counts, guidance, colour strength, source length, persons): it must
run and keep the official bookkeeping. The numbers themselves are checked on the public set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from it_weights import TINY_DIT, official_dit_shapes, random_tensors
from model.infinitetalk.conformance import read_json
from model.infinitetalk.conformance_pipeline import bucket, load_fixture, load_pipeline, official_loop
from model.infinitetalk.loading import build_transformer
from model.infinitetalk.pipeline import ChunkPipeline, SamplingSettings
from model.infinitetalk.sampler import Guidance

PIPELINE = Path(__file__).parent / "fixtures" / "conformance" / "public" / "pipeline"


@pytest.fixture(scope="module")
def public():
    torch.set_num_threads(2)
    return load_fixture(PIPELINE), load_pipeline(PIPELINE, read_json(PIPELINE / "config.json"))


def odd_head_pipeline(base: ChunkPipeline) -> ChunkPipeline:
    config = {**TINY_DIT, "dim": 96, "num_heads": 3, "text_dim": 4096, "audio_layers": 12, "audio_channels": 768}
    transformer = build_transformer(config, random_tensors(official_dit_shapes(config), seed=5))
    return ChunkPipeline(transformer, base.vae, base.clip, "cpu")


def test_bucket_rule_reads_the_patched_table():
    config = read_json(PIPELINE / "config.json")
    assert bucket(config, 100, 90) == (64, 64)
    assert bucket(config, 60, 100) == (48, 80) and bucket(config, 100, 60) == (80, 48)
    assert bucket({"call_settings": {"size_buckget": "infinitetalk-720"}}, 1080, 1920) == (704, 1280)
    assert bucket({"call_settings": {"size_buckget": "infinitetalk-480"}}, 1080, 1920) == (448, 896)


def test_wide_short_source_odd_heads_text_scale_one_apg(public):
    fixture, pipeline = public
    variant = dataclasses.replace(
        fixture, frames=fixture.frames[:20, 20:80, :], size=(48, 80), audio=[fixture.audio[0][:40]],
        frame_num=9, motion_frame=1, color_strength=0.5, seed=3,
        settings=SamplingSettings(steps=2, shift=3.0, guidance=Guidance(1.0, 2.0, apg=True)))
    record = official_loop(odd_head_pipeline(pipeline), variant)
    assert record.video.shape == (3, 40, 48, 80) and torch.isfinite(record.video).all()
    assert record.starts == [0, 8, 16, 24, 32]  # N = 1 + min{n: 8n + 9 >= 40}
    assert record.references == [0, 8, 16, 24, 32]  # reads past the 20-frame source use its last frame
    assert record.output_ranges[0] == (0, 9) and record.output_ranges[-1] == (33, 40)
    assert set(record.chunks[1]) >= {"step0.cond.out", "step0.drop_audio.out", "step1.x_in", "color_corrected"}


def test_clip_mode_two_persons(public):
    fixture, pipeline = public
    second = torch.flip(fixture.audio[0], dims=[0])
    variant = dataclasses.replace(fixture, audio=[fixture.audio[0], second], max_frames=fixture.frame_num,
                                  settings=SamplingSettings(steps=1, shift=7.0, guidance=Guidance(5.0, 4.0)))
    masks = variant.person_masks()
    assert masks.shape == (3, 8, 8) and masks[2].sum() > 0 and masks[0].sum() > 0 and masks[1].sum() > 0
    assert torch.equal(masks[2], 1 - masks[0].clamp(max=1).maximum(masks[1]))
    record = official_loop(pipeline, variant)
    assert len(record.chunks) == 1 and record.video.shape[1] == fixture.frame_num
    assert record.references == [0, 12]  # the official loop reads the next reference before its clip-mode break
