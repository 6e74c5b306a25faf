"""Conformance part B: the official streaming loop, teacher-forced stage by stage and free-running.

The loop driver below reproduces ``generate_infinitetalk``'s chunk bookkeeping (reference frame per
chunk, audio windows, last-chunk mirror padding, the final cut) around ``ChunkPipeline`` - the same
per-chunk implementation the generator runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from model.infinitetalk.audio_features import mirror_padding, pad_mirrored, window_index
from model.infinitetalk.color_transfer import match_colors
from model.infinitetalk.conformance import PrepareDit, Report, file_reference, read_json
from model.infinitetalk.conformance_encoders import clip_from_config, vae_from_config
from model.infinitetalk.loading import build_transformer
from model.infinitetalk.person_masks import latent_person_masks
from model.infinitetalk.pipeline import ChunkConditions, ChunkPipeline, SamplingSettings
from model.infinitetalk.sampler import Guidance, Guider, euler_step, shifted_timesteps
from model.infinitetalk.teacache import TeaCache
from model.frames import BUCKETS, resize_and_centercrop

STAGE = 1e-4  # any DiT call / stage on recorded inputs; chunk 0 free-running
LAST_LATENT = 1e-3  # last chunk x0 latent, free-running
FINAL_VIDEO = 5e-3  # final float video, free-running
UINT8_LEVELS, UINT8_FRACTION = 1, 0.01


@dataclasses.dataclass
class Fixture:
    config: dict
    frames: np.ndarray  # uint8 [N, H, W, 3]
    size: tuple[int, int]  # bucket (h, w)
    audio: list[torch.Tensor]  # per person [L, layers, C]
    prompt: torch.Tensor
    negative: torch.Tensor
    settings: SamplingSettings
    frame_num: int
    motion_frame: int
    max_frames: int
    color_strength: float
    seed: int

    def reference(self, index: int) -> torch.Tensor:
        """Official reader + ``resize_and_centercrop`` + ``(x/255 - 0.5)*2``: ``[1, 3, 1, h, w]``."""
        frame = self.frames[min(index, len(self.frames) - 1)]
        image = torch.from_numpy(np.array(resize_and_centercrop(frame, self.size))).permute(2, 0, 1)[None, :, None]
        return (image / 255 - 0.5) * 2

    def person_masks(self) -> torch.Tensor:
        height, width = self.frames.shape[1:3]
        boxes = self.config.get("input_data", {}).get("bbox")
        boxes = list(boxes.values()) if isinstance(boxes, dict) else boxes
        return latent_person_masks(height, width, self.size, (self.size[0] // 8, self.size[1] // 8),
                                   len(self.audio), boxes)


def bucket(config: dict, height: int, width: int) -> tuple[int, int]:
    """The official closest-ratio bucket, from the set's patched table when it has one."""
    patch = config.get("bucket_table_patch", {}).get("value")
    if patch is None:
        size = 720 if "720" in str(config["call_settings"].get("size_buckget", "480")) else 480
        table = BUCKETS[size]
    else:
        table = {k: (v[0] if isinstance(v[0], (list, tuple)) else v) for k, v in patch.items()}
    ratio = height / width
    key = sorted(table, key=lambda k: abs(float(k) - ratio))[0]
    return tuple(int(x) for x in table[key])


def load_fixture(part_dir: Path) -> Fixture:
    config = read_json(part_dir / "config.json")
    call, extra = config["call_settings"], config.get("extra_args", {})
    frames = load_file(part_dir / "source_frames.safetensors")["frames"].numpy()
    persons = sorted(k for k in config.get("input_data", {}) if k.startswith("cond_audio_person"))
    audio = []
    for key in persons or ["cond_audio_person1"]:
        source = config.get("input_data", {}).get(key, "audio_emb.safetensors:audio_emb")
        file, _, name = source.split()[0].partition(":")
        audio.append(load_file(part_dir / file)[name or "audio_emb"])
    texts = load_file(part_dir / "t5_context.safetensors")
    guidance = Guidance(call["text_guide_scale"], call["audio_guide_scale"], bool(extra.get("use_apg", False)),
                        extra.get("apg_momentum", -0.75), extra.get("apg_norm_threshold", 55))
    teacache = extra.get("teacache_thresh", 0.2) if extra.get("use_teacache") else None
    resolution = 720 if "720" in str(extra.get("size", call.get("size_buckget", "480"))) else 480
    settings = SamplingSettings(steps=call["sampling_steps"], shift=call["shift"], guidance=guidance,
                                teacache=teacache, teacache_resolution=resolution)
    return Fixture(config, frames, bucket(config, *frames.shape[1:3]), audio, texts["prompt"], texts["neg_prompt"],
                   settings, call["frame_num"], call["motion_frame"], call.get("max_frames_num", 1000),
                   call.get("color_correction_strength", 0.0), call["seed"])


def load_pipeline(part_dir: Path, config: dict) -> ChunkPipeline:
    dit_weights = file_reference(part_dir, config["dit"]["weights"])
    dit_config = read_json(file_reference(part_dir, config["dit"]["model_kwargs"]))
    transformer = build_transformer(dit_config["model_kwargs"], load_file(dit_weights))
    return ChunkPipeline(transformer, vae_from_config(part_dir, config["vae"]), clip_from_config(part_dir, config["clip"]),
                         "cpu")


@dataclasses.dataclass
class LoopRecord:
    video: torch.Tensor  # [3, N, H, W]
    references: list[int]  # requested source frame per read, in the official order
    starts: list[int]
    output_ranges: list[tuple[int, int]]
    chunks: list[dict[str, torch.Tensor]]  # per chunk: the pipeline's trace


def official_loop(pipeline: ChunkPipeline, fx: Fixture) -> LoopRecord:
    """``generate_infinitetalk``'s loop around ``ChunkPipeline.generate``."""
    generator = torch.Generator().manual_seed(fx.seed)
    embeddings = list(fx.audio)
    original_length = fx.audio[-1].shape[0]
    color_reference = fx.reference(0)[0, :, 0].permute(1, 2, 0) if fx.color_strength > 0 else None
    masks = fx.person_masks()
    start, first, last, motion = 0, True, False, None
    pieces, starts, chunks, padded = [], [], [], []
    references = [0]  # source reads in the official order: frame 0 first, then each next chunk's start
    while True:
        window = torch.stack([emb[window_index(start, fx.frame_num, emb.shape[0])] for emb in embeddings])
        starts.append(start)
        trace: dict[str, torch.Tensor] = {}
        conditions = ChunkConditions(fx.reference(start), window, fx.prompt, fx.negative, motion, masks,
                                     color_reference, fx.color_strength)
        video = pipeline.generate(conditions, fx.settings, generator,
                                  lambda n, v: trace.__setitem__(n, v.detach().cpu().clone()))
        chunks.append(trace)
        pieces.append(video if first else video[fx.motion_frame:])
        if last:
            break
        first = False
        motion = video[-fx.motion_frame:].permute(3, 0, 1, 2)[None]
        start += fx.frame_num - fx.motion_frame
        references.append(start)
        end = start + fx.frame_num
        if end >= min(fx.max_frames, embeddings[0].shape[0]):
            last = True
            for i, emb in enumerate(embeddings):
                rows = mirror_padding(end, emb.shape[0])
                padded.append(rows)
                embeddings[i] = pad_mirrored(emb, rows)
        if fx.max_frames <= fx.frame_num:
            break
    video = torch.cat(pieces)[: int(fx.max_frames)]
    if fx.max_frames > fx.frame_num and sum(padded) > 0:
        video = video[:original_length]
    total = video.shape[0]
    ranges, position = [], 0
    for piece in pieces:
        ranges.append((min(position, total), min(position + len(piece), total)))
        position += len(piece)
    return LoopRecord(video.permute(3, 0, 1, 2), references, starts, ranges, chunks)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """The official writer's conversion (truncation): ``[3, N, H, W]`` -> ``[N, H, W, 3]``."""
    frames = ((video + 1) / 2).permute(1, 2, 3, 0).numpy()
    return np.clip(frames * 255, 0, 255).astype(np.uint8)


def run(part_dir: Path, label: str, report: Report, prepare_dit: PrepareDit | None = None) -> None:
    fx = load_fixture(part_dir)
    trace = read_json(part_dir / "trace.json")
    stored = load_file(part_dir / "trace_tensors.safetensors")
    pipeline = load_pipeline(part_dir, fx.config)
    if prepare_dit is not None:
        prepare_dit(pipeline.transformer)
    teacher_forced(pipeline, fx, trace, stored, f"{label}/teacher", report)
    free_running(pipeline, fx, trace, stored, part_dir, f"{label}/free", report)


def teacher_forced(pipeline: ChunkPipeline, fx: Fixture, trace: dict, stored: dict, label: str, report: Report) -> None:
    timesteps = shifted_timesteps(fx.settings.steps, fx.settings.shift)
    report.compare(f"{label}/step_timesteps", timesteps[:-1], torch.tensor(trace["step_timesteps"]), 0.0)
    generator = torch.Generator().manual_seed(fx.seed)
    draws = [torch.randn(call["shape"], generator=generator) for call in trace["rng_calls"]]
    noise_draws = [d for d, c in zip(draws, trace["rng_calls"]) if "initial noise" in c.get("purpose", "")]
    pad_rows = stored.get("audio_pad_rows")
    if pad_rows is not None:
        rows = trace["audio_padding"]["miss_length"]
        report.compare(f"{label}/audio_pad_rows", pad_mirrored(fx.audio[0], rows)[fx.audio[0].shape[0]:], pad_rows, 0.0)
    masks = fx.person_masks()
    color_reference = stored["chunk0.cond_image"][0, :, 0].permute(1, 2, 0)
    texts = {"cond": fx.prompt, "null": fx.negative}
    for k, chunk in enumerate(trace["chunks"]):
        name = f"{label}/chunk{k}"
        get = lambda key: stored[f"chunk{k}.{key}"]  # noqa: E731
        start = chunk["audio_start"]
        report.compare(f"{name}/cond_image", fx.reference(chunk["ref_source_frame"]["requested"]), get("cond_image"), 0.0)
        index = window_index(start, fx.frame_num, chunk["audio_emb_len_at_chunk"])
        report.compare(f"{name}/audio_index", index, get("audio_index"), 0.0)
        report.compare(f"{name}/noise", noise_draws[k], get("noise"), 0.0, "RNG replay")
        report.compare(f"{name}/ref_target_masks", masks, get("ref_target_masks"), 0.0)
        y, clip_tokens = pipeline.condition(get("cond_image"), fx.frame_num)
        report.compare(f"{name}/clip_fea", clip_tokens, get("clip_fea"), STAGE)
        report.compare(f"{name}/y", y, get("y"), STAGE)
        if k == 0:
            motion = y[:, 4:, :1]
        else:
            previous = stored[f"chunk{k - 1}.color_corrected"][:, :, -fx.motion_frame:]
            motion = pipeline.motion_latents(previous)
        report.compare(f"{name}/motion_latent", motion[0], get("motion_latent"), STAGE)

        last = 0 < k == len(trace["chunks"]) - 1
        tokens, null_tokens = pipeline.audio_tokens(recorded_window(fx, chunk, stored, k, pad_rows, last))
        audio = {"cond": tokens, "null": null_tokens}
        stored_motion = get("motion_latent")[None]
        count = stored_motion.shape[2]
        guider = Guider(fx.settings.guidance)
        cache = None if fx.settings.teacache is None else TeaCache(fx.settings.teacache, fx.settings.teacache_resolution)
        call_diff, step_diff = 0.0, 0.0
        for step in range(fx.settings.steps):
            x_in = get(f"step{step}.x_in")[None]
            branches = tuple(b for b in ("cond", "drop_text", "uncond", "drop_audio") if f"chunk{k}.step{step}.{b}.out" in stored)
            outs = pipeline.predict(x_in, timesteps[step], branches, get("y"), get("clip_fea"), texts, audio,
                                    get("ref_target_masks"), teacache=cache)
            if cache is not None:
                cache.next_step()
            for branch in branches:
                call_diff = max(call_diff, (outs[branch] - get(f"step{step}.{branch}.out")).abs().max().item())
            recorded = {b: get(f"step{step}.{b}.out") for b in branches}
            latent = euler_step(x_in, guider(recorded), timesteps[step], timesteps[step + 1])
            latent[:, :, :count] = stored_motion
            following = get(f"step{step + 1}.x_in") if step + 1 < fx.settings.steps else get("x0_latent")
            step_diff = max(step_diff, (latent[0] - following).abs().max().item())
        calls = fx.settings.steps * len(branches)
        report.add(_case(f"{name}/dit_calls", call_diff, STAGE, f"{calls} calls on the recorded inputs"))
        report.add(_case(f"{name}/guidance_euler_steps", step_diff, STAGE, "CFG + Euler + motion replacement"))
        decoded = pipeline.vae.decode(get("x0_latent")[None])
        report.compare(f"{name}/decoded", decoded, get("decoded"), STAGE)
        corrected = match_colors(get("decoded")[0].permute(1, 2, 3, 0), color_reference, fx.color_strength)
        report.compare(f"{name}/color_corrected", corrected.permute(3, 0, 1, 2)[None], get("color_corrected"), STAGE)


def recorded_window(fx: Fixture, chunk: dict, stored: dict, k: int, pad_rows, last: bool) -> torch.Tensor:
    """``[persons, F, 5, layers, C]``: person 1 from the recorded index (and pad rows), the others as the
    official loop gathers them (mirror-padded only in the chunk that reaches their end)."""
    first = fx.audio[0]
    if pad_rows is not None and chunk["audio_emb_len_at_chunk"] > first.shape[0]:
        first = torch.cat([first, pad_rows])
    windows = [first[stored[f"chunk{k}.audio_index"]]]
    start, end = chunk["audio_start"], chunk["audio_start"] + fx.frame_num
    for emb in fx.audio[1:]:
        emb = pad_mirrored(emb, mirror_padding(end, emb.shape[0])) if last else emb
        windows.append(emb[window_index(start, fx.frame_num, emb.shape[0])])
    return torch.stack(windows)


def _case(name: str, diff: float, tol: float, note: str):
    from model.infinitetalk.conformance import Case

    return Case(name, diff, tol, diff <= tol, note)


def free_running(pipeline: ChunkPipeline, fx: Fixture, trace: dict, stored: dict, part_dir: Path, label: str,
                 report: Report) -> None:
    record = official_loop(pipeline, fx)
    chunks = trace["chunks"]
    report.check(f"{label}/chunk_count", len(record.chunks) == trace["n_chunks"],
                 f"{len(record.chunks)} chunks, official {trace['n_chunks']}")
    requested = [e["requested"] for e in trace["extract_frames"]]
    report.check(f"{label}/reference_frames", record.references == requested,
                 f"source reads {record.references} vs official {requested}")
    expected_ranges = [tuple(c["output_frames"]) for c in chunks]
    report.check(f"{label}/output_ranges", record.output_ranges == expected_ranges,
                 f"{record.output_ranges} vs {expected_ranges}")
    for k, chunk_trace in enumerate(record.chunks):
        if f"chunk{k}.noise" in stored:
            report.compare(f"{label}/chunk{k}/noise", chunk_trace["noise"], stored[f"chunk{k}.noise"], 0.0, "RNG replay")
    for key in ("x0_latent", "decoded", "color_corrected"):
        report.compare(f"{label}/chunk0/{key}", record.chunks[0][key], stored[f"chunk0.{key}"], STAGE)
    last = len(record.chunks) - 1
    if last > 0 and f"chunk{last}.x0_latent" in stored:
        report.compare(f"{label}/chunk{last}/x0_latent", record.chunks[last]["x0_latent"],
                       stored[f"chunk{last}.x0_latent"], LAST_LATENT)
    final = load_file(part_dir / "final_video.safetensors")
    report.compare(f"{label}/video", record.video, final["video"], FINAL_VIDEO)
    mine = to_uint8(record.video).astype(np.int16)
    theirs = final["video_uint8"].numpy().astype(np.int16)
    if mine.shape != theirs.shape:
        report.check(f"{label}/video_uint8", False, f"shape {mine.shape} != {theirs.shape}")
        return
    diff = np.abs(mine - theirs)
    fraction = float((diff > 0).mean())
    ok = diff.max() <= UINT8_LEVELS and fraction <= UINT8_FRACTION
    from model.infinitetalk.conformance import Case

    report.add(Case(f"{label}/video_uint8", float(diff.max()), UINT8_LEVELS, ok,
                    f"levels; {100 * fraction:.3f}% of values differ, allowed {100 * UINT8_FRACTION:g}%"))
