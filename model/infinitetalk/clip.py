"""The CLIP image features of the reference frame: Wan's ViT-H/14 visual tower on transformers' CLIPVisionModel.

The official output is the second-to-last block's (``use_31_block``), not post-normalised. The model is
therefore built with L-1 layers and its ``last_hidden_state`` used (the same as ``hidden_states[-2]`` of
the L-layer model; with L=1 no block runs and the output is the pre-norm embedding). Preprocessing is
Wan's, not CLIPImageProcessor's: a bicubic squash of the [-1,1] frame to 224x224 (no crop, no antialias),
then ``x*0.5+0.5`` and the CLIP mean/std (spec §5.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
VIT_H_HEADS = 16  # heads cannot be read from weights; Wan's clip_xlm_roberta_vit_h_14 has 16


def clip_pixel_values(image: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``[B, 3, H, W]`` (or ``[B, 3, 1, H, W]``) in [-1, 1] -> normalised ``[B, 3, size, size]`` float32."""
    if image.ndim == 5:
        image = image[:, :, -1]
    x = F.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def clip_config_from_state_dict(visual: dict[str, torch.Tensor], heads: int = VIT_H_HEADS,
                                layers: int | None = None, mlp_ratio: float = 4.0) -> tuple[CLIPVisionConfig, int]:
    """Config of the tower that gives the official output, and the official layer count L.

    ``visual`` holds the official ``visual.*`` keys (others are ignored). ``layers`` is needed only when
    the block weights are absent (a tower whose only block never runs may be stored without it)."""
    patch = visual["visual.patch_embedding.weight"]
    dim = patch.shape[0]
    blocks = {int(k.split(".")[2]) for k in visual if k.startswith("visual.transformer.")}
    if layers is None:
        if not blocks:
            raise ValueError("CLIP weights hold no transformer blocks; the layer count must be given")
        layers = 1 + max(blocks)
    mlp_key = "visual.transformer.0.mlp.0.weight"
    mlp = visual[mlp_key].shape[0] if mlp_key in visual else int(dim * mlp_ratio)
    tokens = visual["visual.pos_embedding"].shape[-2]
    grid = round((tokens - 1) ** 0.5)
    config = CLIPVisionConfig(hidden_size=dim, intermediate_size=mlp, num_hidden_layers=layers - 1,
                              num_attention_heads=heads, image_size=grid * patch.shape[-1],
                              patch_size=patch.shape[-1], hidden_act="gelu", layer_norm_eps=1e-5)
    return config, layers


class ClipImageEncoder:
    """Reference frame -> ``[B, 257, dim]`` CLIP tokens (the DiT's image context)."""

    def __init__(self, model: CLIPVisionModel, compute_dtype: torch.dtype = torch.float32) -> None:
        self.model = model.eval().requires_grad_(False)
        self.compute_dtype = compute_dtype

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.patch_embedding.weight.device

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        pixels = clip_pixel_values(image.to(self.device))
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32):
            out = self.model(pixel_values=pixels.to(self.model.dtype)).last_hidden_state
        return out.float()
