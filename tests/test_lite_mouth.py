"""The painted inner mouth of ``lite`` on a face whose lips are already apart (the astronaut smiles with her
upper teeth showing), seen at close range: soft edges against teeth and lips, shading inside, the tongue
and the lower teeth's edge, instead of a hard-edged flat black crescent. Measured on the render of a
wide-open mouth (opening 1), at the cavity that ``mouth.cavity_profiles`` says the lips leave."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from model.lite import mouth
from model.lite.face import FaceLandmarks
from streaming.source import resize_and_centercrop

CLOSE_UP = (20, 240, 110, 330)  # the astronaut's face filling a 480x480 frame: mouth about 94 px wide
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@pytest.fixture(scope="module")
def wide_open():
    """(image, geometry, render at opening 1, cavity top and bottom per column, inner half-width)."""
    faces = FaceLandmarks()
    try:
        image = resize_and_centercrop(skimage.data.astronaut()[CLOSE_UP[0]:CLOSE_UP[1], CLOSE_UP[2]:CLOSE_UP[3]],
                                      (480, 480))
        geometry = mouth.measure(image, faces.detect(image))
    finally:
        faces.close()
    assert geometry.ref_gap > 0.3 * geometry.inner_half_width  # the source's lips are apart, teeth showing
    top, bottom, inner_half = mouth.cavity_profiles(geometry, 1.0, 0.0)
    return image, geometry, mouth.render(image, geometry, 1.0, 0.0), top, bottom, inner_half


def _cavity(wide_open, depth_from: float = 0.0, across: float = 1.0) -> np.ndarray:
    """Image pixels inside the cavity past its soft edge (from ``depth_from`` of its height down, within
    ``across`` of its half-width)."""
    image, g, _, top, bottom, inner_half = wide_open
    feather = max(1.0, mouth.FEATHER * g.inner_half_width)
    v_top, v_bottom = g.lookup(top), g.lookup(bottom)
    depth = (g.v - v_top) / np.maximum(v_bottom - v_top, 1e-3)
    mask = np.zeros(image.shape[:2], bool)
    r0, r1, c0, c1 = g.box
    mask[r0:r1, c0:c1] = ((g.v > v_top + feather) & (g.v < v_bottom - feather) & (depth >= depth_from)
                          & (np.abs(g.u) < across * inner_half))
    return mask


def test_edges_are_soft(wide_open):
    """Across the upper (teeth) and lower (lip) edge of the cavity, in the middle half of the mouth, no
    single pixel carries more than 40 % of the edge's contrast (a hard edge carries about 70 %)."""
    _, g, out, top, bottom, inner_half = wide_open
    luma = out.astype(np.float32) @ LUMA
    steepest = {"upper": [], "lower": []}
    for u in np.linspace(-0.4 * inner_half, 0.4 * inner_half, 9):
        for name, line in (("upper", top), ("lower", bottom)):
            edge = float(np.interp(u, g.grid_u, line))
            v = np.arange(edge - 6, edge + 6, 0.25, dtype=np.float32)
            points = (g.origin[None] + u * g.eu[None] + v[:, None] * g.ev[None]).astype(np.float32)
            profile = cv2.remap(luma, points[:, :1].copy(), points[:, 1:].copy(), cv2.INTER_LINEAR)[:, 0]
            contrast = profile.max() - profile.min()
            assert contrast > 40  # an edge there: teeth or lip against the dark
            steepest[name].append(np.abs(np.diff(profile)).max() / 0.25 / contrast)
    for name, values in steepest.items():
        assert np.median(values) < 0.4, (name, np.round(values, 2))


def test_inside_is_shaded_with_tongue_and_lower_teeth(wide_open):
    _, _, out, *_ = wide_open
    inside = out[_cavity(wide_open)].astype(np.float32)
    assert len(inside) > 200
    luma = inside @ LUMA
    assert luma.std() > 12, luma.std()  # shaded, not flat (a flat fill has a spread of about 3)
    assert 35 < luma.mean() < 90, luma.mean()  # dark, but not black
    # The tongue: clearly red pixels (a dark red is still red), not a black hole.
    red = (inside[:, 0] > 1.6 * inside[:, 1]) & (inside[:, 0] > 70)
    assert red.mean() > 0.12, red.mean()
    # The lower teeth's edge: light, low-saturation pixels in the lowest part of the cavity's middle.
    low = out[_cavity(wide_open, depth_from=0.7, across=0.35)].astype(np.float32)
    saturation = (low.max(axis=1) - low.min(axis=1)) / np.maximum(low.max(axis=1), 1)
    assert ((saturation < 0.45) & (low @ LUMA > 90)).mean() > 0.25


def test_a_closed_mouth_paints_nothing(wide_open):
    """Opening 0 leaves no cavity: the lips meet and nothing dark is painted between them."""
    image, g, *_ = wide_open
    top, bottom, _ = mouth.cavity_profiles(g, 0.0, 0.0)
    assert float((bottom - top).max()) < 0.35
