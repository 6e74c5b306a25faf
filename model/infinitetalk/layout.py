"""The weights directory: the official release layout, checked up front, and each component read from it.

    DIR/Wan2.1-I2V-14B-480P/            (or Wan2.1-I2V-14B-720P)
        config.json
        diffusion_pytorch_model-0000N-of-0000M.safetensors   (all M shards; the index json is optional)
        Wan2.1_VAE.pth
        models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth
        models_t5_umt5-xxl-enc-bf16.pth
        google/umt5-xxl/                 (tokenizer: tokenizer.json, or spiece.model with sentencepiece)
    DIR/chinese-wav2vec2-base/           config.json, model.safetensors or pytorch_model.bin,
                                         preprocessor_config.json
    DIR/InfiniteTalk/single/infinitetalk.safetensors   (multi/ for the two-speaker weights)

Nothing is ever downloaded: every file is opened from DIR (``local_files_only``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

from model.errors import InputError

WAN_DIRS = ("Wan2.1-I2V-14B-480P", "Wan2.1-I2V-14B-720P")
VAE_FILE = "Wan2.1_VAE.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = "google/umt5-xxl"
WAV2VEC_DIR = "chinese-wav2vec2-base"
SPEAKERS = ("single", "multi")
SHARD = re.compile(r"^diffusion_pytorch_model-(\d+)-of-(\d+)\.safetensors$")
EXPECTED = (f"{WAN_DIRS[0]}/{{config.json, diffusion_pytorch_model-0000N-of-0000M.safetensors, {VAE_FILE}, "
            f"{CLIP_FILE}, {T5_FILE}, {TOKENIZER_DIR}/}}, {WAV2VEC_DIR}/{{config.json, model.safetensors, "
            "preprocessor_config.json}, InfiniteTalk/single/infinitetalk.safetensors")


@dataclasses.dataclass(frozen=True)
class WeightsLayout:
    root: Path
    wan_dir: Path
    shards: tuple[Path, ...]
    infinitetalk: Path

    @property
    def config(self) -> Path:
        return self.wan_dir / "config.json"

    @property
    def vae(self) -> Path:
        return self.wan_dir / VAE_FILE

    @property
    def clip(self) -> Path:
        return self.wan_dir / CLIP_FILE

    @property
    def t5(self) -> Path:
        return self.wan_dir / T5_FILE

    @property
    def tokenizer(self) -> Path:
        return self.wan_dir / TOKENIZER_DIR

    @property
    def wav2vec(self) -> Path:
        return self.root / WAV2VEC_DIR

    @classmethod
    def find(cls, root: str | Path, speakers: str = "single") -> "WeightsLayout":
        """Check the layout; one error naming everything that is missing and what is expected."""
        if speakers not in SPEAKERS:
            raise InputError(f"bad speakers {speakers!r}: accepted are {', '.join(SPEAKERS)}")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise InputError(f"weights directory not found: {root} (expected the official layout: {EXPECTED})")
        wan_dir = next((root / name for name in WAN_DIRS if (root / name).is_dir()), root / WAN_DIRS[0])
        missing: list[str] = []
        shards = find_shards(wan_dir, missing)
        for path in (wan_dir / "config.json", wan_dir / VAE_FILE, wan_dir / CLIP_FILE, wan_dir / T5_FILE):
            if not path.is_file():
                missing.append(str(path.relative_to(root)))
        tokenizer = wan_dir / TOKENIZER_DIR
        if not any((tokenizer / name).is_file() for name in ("tokenizer.json", "spiece.model")):
            missing.append(f"{tokenizer.relative_to(root)}/tokenizer.json (or spiece.model)")
        wav2vec = root / WAV2VEC_DIR
        for name in ("config.json", "preprocessor_config.json"):
            if not (wav2vec / name).is_file():
                missing.append(f"{WAV2VEC_DIR}/{name}")
        if not any((wav2vec / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
            missing.append(f"{WAV2VEC_DIR}/model.safetensors (or pytorch_model.bin)")
        infinitetalk = root / "InfiniteTalk" / speakers / "infinitetalk.safetensors"
        if not infinitetalk.is_file():
            missing.append(str(infinitetalk.relative_to(root)))
        if missing:
            raise InputError(f"weights directory {root} is incomplete: missing {', '.join(missing)}; "
                             f"expected the official layout: {EXPECTED}")
        return cls(root, wan_dir, tuple(shards), infinitetalk)


def find_shards(wan_dir: Path, missing: list[str]) -> list[Path]:
    """The DiT shards: those the index names, else every ``-N-of-M`` file (all M required), else one file."""
    index = wan_dir / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        paths = [wan_dir / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        missing.extend(f"{wan_dir.name}/{p.name}" for p in paths if not p.is_file())
        return paths
    matches = [m for p in wan_dir.glob("diffusion_pytorch_model-*-of-*.safetensors") if (m := SHARD.match(p.name))]
    if not matches:
        single = wan_dir / "diffusion_pytorch_model.safetensors"
        if single.is_file():
            return [single]
        missing.append(f"{wan_dir.name}/diffusion_pytorch_model-0000N-of-0000M.safetensors")
        return []
    total_text = max((m.group(2) for m in matches), key=int)
    width = len(matches[0].group(1))
    paths = [wan_dir / f"diffusion_pytorch_model-{i:0{width}d}-of-{total_text}.safetensors"
             for i in range(1, int(total_text) + 1)]
    missing.extend(f"{wan_dir.name}/{p.name}" for p in paths if not p.is_file())
    return paths


def read_dit_state(layout: WeightsLayout, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The Wan shards then the InfiniteTalk file merged (the later file wins, as ``dict.update`` in the
    official loader), each tensor cast to ``dtype`` as it is read: one copy in memory."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for path in (*layout.shards, layout.infinitetalk):
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                state[key] = handle.get_tensor(key).to(dtype)
    return state
