"""Frame geometry shared by generators and sources: the official size buckets and the official
resize-and-centre-crop (here in model/ because generators and their conformance checks need it, and
model/ imports nothing from streaming/)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# The official 480 / 720 bucket tables (spec §2.1), keyed by h/w ratio; values are (height, width).
BUCKETS = {
    480: {"0.26": (320, 1216), "0.38": (384, 1024), "0.50": (448, 896), "0.67": (512, 768),
          "0.82": (576, 704), "1.00": (640, 640), "1.22": (704, 576), "1.50": (768, 512),
          "1.86": (832, 448), "2.00": (896, 448), "2.50": (960, 384), "2.83": (1088, 384),
          "3.60": (1152, 320), "3.80": (1216, 320), "4.00": (1280, 320)},
    720: {"0.22": (448, 2048), "0.29": (512, 1792), "0.36": (576, 1600), "0.45": (640, 1408),
          "0.55": (704, 1280), "0.63": (768, 1216), "0.76": (832, 1088), "0.88": (896, 1024),
          "1.00": (960, 960), "1.14": (1024, 896), "1.31": (1088, 832), "1.50": (1152, 768),
          "1.58": (1216, 768), "1.82": (1280, 704), "1.91": (1344, 704), "2.20": (1408, 640),
          "2.30": (1472, 640), "2.67": (1536, 576), "2.89": (1664, 576), "3.62": (1856, 512),
          "3.75": (1920, 512)},
}

def bucket_size(height: int, width: int, table: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose ratio key is closest to h/w; the first one on a tie (official rule)."""
    ratio = height / width
    key = min(table, key=lambda k: abs(float(k) - ratio))
    return table[key]


def resize_and_centercrop(image: np.ndarray, size: tuple[int, int], resample=Image.BILINEAR) -> np.ndarray:
    """Official ``resize_and_centercrop``: scale to cover, PIL bilinear, centre crop with rounded offsets."""
    target_h, target_w = size
    h, w = image.shape[:2]
    scale = max(target_h / h, target_w / w)
    new_h, new_w = math.ceil(scale * h), math.ceil(scale * w)
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample))
    top = int(round((new_h - target_h) / 2))
    left = int(round((new_w - target_w) / 2))
    return np.ascontiguousarray(image[top : top + target_h, left : left + target_w])
