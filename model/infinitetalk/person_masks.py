"""Per-person region masks at latent resolution, ``[3, h, w]`` = (person 1, person 2, background) (spec §2.2 step 7).

One person: all ones. Two persons: the given boxes ``[x_min, y_min, x_max, y_max]`` in source pixels
(official quirk: "x" indexes rows), or by default the left and right halves inset by 5 %. Built at
source resolution, resized (nearest) and centre-cropped like the frames, then nearest-downsampled to the
latent grid and thresholded at 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FACE_SCALE = 0.05


def source_person_masks(height: int, width: int, persons: int, boxes: list | None = None) -> torch.Tensor:
    if persons == 1:
        return torch.ones(3, height, width)
    masks = []
    if boxes:
        for x_min, y_min, x_max, y_max in boxes:
            mask = torch.zeros(height, width)
            mask[int(x_min):int(x_max), int(y_min):int(y_max)] = 1
            masks.append(mask)
    else:
        rows = slice(int(height * FACE_SCALE), int(height * (1 - FACE_SCALE)))
        half = width // 2
        for offset in (0, half):
            mask = torch.zeros(height, width)
            mask[rows, int(half * FACE_SCALE + offset):int(half * (1 - FACE_SCALE) + offset)] = 1
            masks.append(mask)
    background = (torch.stack(masks).sum(0) > 0).logical_not().float()
    return torch.stack([*masks, background])


def latent_person_masks(height: int, width: int, target: tuple[int, int], latent: tuple[int, int],
                        persons: int, boxes: list | None = None) -> torch.Tensor:
    masks = source_person_masks(height, width, persons, boxes)
    scale = max(target[0] / height, target[1] / width)
    resized = F.interpolate(masks[None], size=(math.ceil(scale * height), math.ceil(scale * width)), mode="nearest")
    top = int(round((resized.shape[-2] - target[0]) / 2.0))
    left = int(round((resized.shape[-1] - target[1]) / 2.0))
    cropped = resized[:, :, top : top + target[0], left : left + target[1]]
    return (F.interpolate(cropped, size=latent, mode="nearest")[0] > 0).float()
