"""Conformance part A: the DiT forward on the set's stored inputs (official call convention)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from model.infinitetalk.conformance import PrepareDit, Report, read_json
from model.infinitetalk.loading import build_transformer

TOLERANCE = 1e-4  # README: "max |diff| <= 1e-5 expected; suggested assert atol=1e-4"


def load_transformer(dit_dir: Path):
    config = read_json(dit_dir / "config.json")
    return build_transformer(config["model_kwargs"], load_file(dit_dir / "state_dict.safetensors"))


def official_forward(model, inputs: dict):
    """``WanModel(x=[x], t, context=[ctx], seq_len, clip_fea, y, audio, ref_target_masks)`` -> ``[1, 16, T, H, W]``."""
    x = inputs["x"]
    tokens = x.shape[1] * (x.shape[2] // 2) * (x.shape[3] // 2)
    if "seq_len" in inputs and int(inputs["seq_len"]) != tokens:
        raise ValueError(f"seq_len {int(inputs['seq_len'])} != {tokens} tokens: padded sequences (sequence "
                         "parallelism) are not supported")
    audio_tokens = model.encode_audio(inputs["audio"])
    return model(x[None], inputs["t"], inputs["context"][None], inputs["clip_fea"], inputs["y"], audio_tokens,
                 inputs["ref_target_masks"])[0]


def whole_sequence(model, tokens, x):
    """A block's output ``[B, n, C]``: on a sharded DiT each rank holds its slice, gathered here."""
    if model._sequence_parallel is None:
        return tokens
    frame_tokens = (x.shape[2] // 2) * (x.shape[3] // 2)
    return model._sequence_parallel.layout(x.shape[1] * frame_tokens, frame_tokens).gather(tokens)


def run(dit_dir: Path, label: str, report: Report, prepare_dit: PrepareDit | None = None) -> None:
    config = read_json(dit_dir / "config.json")
    model = load_transformer(dit_dir)
    if prepare_dit is not None:
        prepare_dit(model)
    for case in config["cases"]:
        inputs = load_file(dit_dir / f"{case}_inputs.safetensors")
        expected = load_file(dit_dir / f"{case}_output.safetensors")["out"]
        captured = {}
        hooks = [block.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(f"blocks.{i}", out))
                 for i, block in enumerate(model.blocks)]
        try:
            out = official_forward(model, inputs)
        finally:
            for hook in hooks:
                hook.remove()
        report.compare(f"{label}/{case}/out", out, expected, TOLERANCE)
        intermediates_path = dit_dir / f"{case}_intermediates.safetensors"
        if intermediates_path.is_file():
            intermediates = load_file(intermediates_path)
            from model.infinitetalk.audio_proj import split_audio_window

            if "audio_proj" in intermediates:
                audio = inputs["audio"]
                tokens = model.audio_proj(*split_audio_window(audio, model.config.vae_scale))
                report.compare(f"{label}/{case}/audio_proj", tokens, intermediates["audio_proj"], TOLERANCE)
            for name in sorted(k for k in intermediates if k.startswith("blocks.")):
                block_out = whole_sequence(model, captured[name], inputs["x"])
                report.compare(f"{label}/{case}/{name}", block_out, intermediates[name], TOLERANCE)
