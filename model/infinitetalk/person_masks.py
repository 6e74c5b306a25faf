"""Per-person region masks at latent resolution, ``[3, h, w]`` = (person 1, person 2, background) (spec §2.2 step 7).

One person: all ones. Two persons: the given boxes ``[x_min, y_min, x_max, y_max]`` in source pixels
(official quirk: "x" indexes rows), or by default the left and right halves inset by 5 %. Built at
source resolution, resized (nearest) and centre-cropped like the frames, then nearest-downsampled to the
latent grid and thresholded at 0.

``boxes_from_faces`` makes the two boxes from detected faces instead of asking the user for them (the
official code takes them from the input JSON): each person is their face widened to the shoulders and
extended down to the bottom of the picture, never past the midline between the two faces.
"""

from __future__ import annotations

import math

import numpy as np
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


SHOULDERS = 0.8  # a person's box reaches this many face widths beyond each side of the face
ABOVE_FACE = 0.5  # and this many face heights above it (hair)


def boxes_from_faces(faces: list[np.ndarray], height: int, width: int) -> list[list[int]]:
    """Person boxes in the official format (``[row_min, col_min, row_max, col_max]``, rows first as the
    official "x") for two faces given as arrays of [x, y] points in pixels, in speaker order."""
    centres = [float(np.mean(points[:, 0])) for points in faces]
    midline = (centres[0] + centres[1]) / 2
    boxes = []
    for points, centre in zip(faces, centres):
        left, top = points.min(axis=0)
        right, bottom = points.max(axis=0)
        reach = SHOULDERS * (right - left)
        col_min, col_max = left - reach, right + reach
        if centre < midline:  # the other face is to the right: stop at the midline
            col_max = min(col_max, midline)
        else:
            col_min = max(col_min, midline)
        row_min = top - ABOVE_FACE * (bottom - top)
        boxes.append([int(max(row_min, 0)), int(max(col_min, 0)), height, int(min(col_max, width))])
    return boxes
