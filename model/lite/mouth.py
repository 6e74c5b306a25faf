"""Re-animating the lower face: a smooth displacement-field warp of lips and jaw, and the inner mouth.

Geometry lives in a mouth frame: ``u`` along the line through the mouth corners, ``v`` across it (down,
towards the chin), both in pixels, origin between the corners. From the landmarks of the frame being
animated we take, per column ``u``, the inner and outer lip lines, the jaw line and the nose base.

A frame with opening ``o`` and width ``s`` is made by backward warping with two displacement systems:
- the upper one (upper lip, the upper half of whatever the mouth showed: upper teeth) moves up a little
  (a fraction of the new gap) and fades out towards the nose;
- the lower one (lower lip, lower teeth, chin) follows the jaw: near the mouth the lower lip takes the
  shape of the gap, towards the chin the whole jaw moves as one, and below the chin the motion fades out
  over the neck.
Where the two systems leave a hole between the lips (the new gap), the inner mouth is painted: a dark,
warm cavity shaded from the lip colour, the tongue rising from below, the edge of the lower teeth, upper
teeth where the image showed none, with soft edges against lips and teeth. Width changes move the corners in or out.
Every weight is smooth and reaches zero inside the region of interest, so the frame outside it is copied
unchanged and the warp has no visible edge.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from model.lite import face

UPPER_SHARE = 0.18  # part of a new gap taken by the upper lip; the jaw drops for the rest
MAX_GAP = 0.7  # largest gap between the inner lips, in inner half-widths of the mouth
SPREAD, ROUND, OPEN_NARROWING = 0.08, 0.16, 0.06  # corner motion in half-widths
GRID_STEP = 0.5  # pixels between samples of the per-column profiles
# The inner mouth's look, in fractions of the inner half-width of the mouth (so it scales with the face).
FEATHER = 0.06  # half the width of the soft edge where the cavity meets lips and teeth (at least a pixel)
LOWER_TEETH = 0.11  # height of the lower teeth's visible edge above the lower lip
TONGUE_RISE = 0.45  # how far the tongue's back rises into a wide-open mouth (a fraction of the gap)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclasses.dataclass
class MouthGeometry:
    """Everything about one face image that does not depend on the mouth parameters."""

    box: tuple[int, int, int, int]  # top, bottom, left, right of the region of interest (pixels)
    origin: np.ndarray
    eu: np.ndarray  # unit vector along the mouth (image coordinates)
    ev: np.ndarray  # unit vector towards the chin
    half_width: float  # outer corners
    inner_half_width: float
    ref_gap: float  # gap between the inner lips at the middle in the image
    # Per-pixel (region of interest) arrays.
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    index: np.ndarray  # into the profile grid
    frac: np.ndarray
    upper_weight: np.ndarray  # how much of the upper lip's motion a pixel takes
    jaw_blend: np.ndarray  # 0: moves with the lower lip's shape, 1: with the jaw as a whole
    jaw_weight: np.ndarray  # lateral jaw envelope x fade below the chin
    lower_fade: np.ndarray  # fade below the chin
    side_weight: np.ndarray  # how much of the corners' sideways motion a pixel takes (signed)
    # Per-column profiles on the grid.
    grid_u: np.ndarray
    upper_inner: np.ndarray
    lower_inner: np.ndarray
    # Colours (RGB float) for painting the inner mouth.
    lip_colour: np.ndarray
    teeth_colour: np.ndarray

    @property
    def mid(self) -> np.ndarray:
        return 0.5 * (self.upper_inner + self.lower_inner)

    def lookup(self, profile: np.ndarray) -> np.ndarray:
        """A per-column profile at every pixel of the region."""
        return at_columns(profile, self.index, self.frac)


def at_columns(profile: np.ndarray, index: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """A profile sampled on the column grid, read at pixels (grid ``index`` + ``frac``): linear interpolation."""
    return profile[index] * (1.0 - frac) + profile[index + 1] * frac


def _profile(points: np.ndarray, grid: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0])
    return np.interp(grid, points[order, 0], points[order, 1]).astype(np.float32)


def measure(image: np.ndarray, landmarks: np.ndarray) -> MouthGeometry | None:
    """The mouth geometry of ``image`` from its face landmarks; None when the mouth is too small to animate."""
    left_corner, right_corner = landmarks[face.MOUTH_CORNERS[0]], landmarks[face.MOUTH_CORNERS[1]]
    along = right_corner - left_corner
    half_width = float(np.linalg.norm(along)) / 2
    if half_width < 4:
        return None
    eu = along / (2 * half_width)
    ev = np.array([-eu[1], eu[0]], np.float32)
    origin = (left_corner + right_corner) / 2
    uv = np.stack([(landmarks - origin) @ eu, (landmarks - origin) @ ev], axis=1)

    inner_left, inner_right = face.INNER_UPPER_LIP[0], face.INNER_UPPER_LIP[-1]
    inner_half_width = float(uv[inner_right, 0] - uv[inner_left, 0]) / 2
    if inner_half_width < 3:
        return None
    nose_v = float(uv[face.SUBNASALE, 1])
    jaw = uv[face.JAW]
    jaw_half_width = float(np.max(np.abs(jaw[:, 0])))
    chin_v = float(uv[face.CHIN, 1])
    # The chin moves at most this far (down to open wide, or up to close a mouth the image shows open);
    # below the chin the motion fades out over a distance that keeps the warp from folding.
    upper_middle, lower_middle = face.INNER_LIP_MIDDLE
    ref_gap = max(0.0, float(uv[lower_middle, 1] - uv[upper_middle, 1]))
    max_drop = max(MAX_GAP * inner_half_width * (1 - UPPER_SHARE) - ref_gap / 2, ref_gap / 2)
    fade_below_chin = max(0.6 * chin_v, 2.5 * max_drop)

    # Region of interest in the mouth frame, then its bounding box in the image.
    u_lo, u_hi = -1.05 * jaw_half_width, 1.05 * jaw_half_width
    v_lo, v_hi = nose_v, chin_v + fade_below_chin
    corners = np.array([origin + a * eu + b * ev for a in (u_lo, u_hi) for b in (v_lo, v_hi)])
    height, width = image.shape[:2]
    left, top = np.floor(corners.min(axis=0)).astype(int)
    right, bottom = np.ceil(corners.max(axis=0)).astype(int) + 1
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if right - left < 8 or bottom - top < 8:
        return None
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
    u = (xs - origin[0]) * eu[0] + (ys - origin[1]) * eu[1]
    v = (xs - origin[0]) * ev[0] + (ys - origin[1]) * ev[1]

    grid_u = np.arange(u.min() - 2, u.max() + 2 + GRID_STEP, GRID_STEP, dtype=np.float32)
    position = (u - grid_u[0]) / GRID_STEP
    index = np.clip(np.floor(position).astype(np.int32), 0, grid_u.size - 2)
    frac = (position - index).astype(np.float32)

    # Lip lines; beyond the inner corners both inner lines follow the seam out to the outer corners.
    corners_idx = list(face.MOUTH_CORNERS)
    upper_inner = _profile(uv[[corners_idx[0], *face.INNER_UPPER_LIP, corners_idx[1]]], grid_u)
    lower_inner = _profile(uv[[corners_idx[0], *face.INNER_LOWER_LIP, corners_idx[1]]], grid_u)
    lower_inner = np.maximum(lower_inner, upper_inner)
    jaw_line = np.maximum(_profile(jaw, grid_u), lower_inner + 2)

    upper_px, lower_px, jaw_px = (at_columns(line, index, frac) for line in (upper_inner, lower_inner, jaw_line))
    # Upper lip: full motion from its inner edge into the mouth, fading to nothing at the nose base.
    upper_weight = smoothstep((v - nose_v) / np.maximum(upper_px - nose_v, 1.0))
    upper_weight *= 1.0 - smoothstep((np.abs(u) - half_width) / (0.6 * half_width))
    # Lower face: lip shape at the lower lip, the jaw as a block from about the chin's middle down.
    # (One blend distance for all columns: towards the jaw's corners the jaw line rises to the mouth,
    # and a distance that shrank with it would shear the cheek along the line of the lips.)
    lip_to_chin = max(chin_v - float(np.interp(0.0, grid_u, lower_inner)), 4.0)
    jaw_blend = smoothstep((v - lower_px) / (0.7 * lip_to_chin))
    lateral = 1.0 - smoothstep((np.abs(u) - 0.45 * jaw_half_width) / (0.55 * jaw_half_width))
    lower_fade = 1.0 - smoothstep((v - jaw_px) / fade_below_chin)
    # Sideways: the mouth scales about its middle, the motion fading beyond the corners, up to the nose
    # and down to the chin.
    beyond = max(min(half_width, 0.95 * jaw_half_width - half_width), 0.2 * half_width)
    side = np.clip(u / half_width, -1, 1) * (1 - smoothstep((np.abs(u) - half_width) / beyond))
    lips_v = float(uv[list(face.OUTER_LIP_MIDDLE), 1].mean())
    side_weight = side * np.where(v < lips_v, smoothstep((v - nose_v) / max(lips_v - nose_v, 1.0)),
                                  1 - smoothstep((v - lips_v) / max(chin_v - lips_v, 1.0)))
    # Safety margin: every motion reaches zero a little inside the region's edge, so that it never tears.
    ramp = max(3.0, 0.08 * half_width)
    inside = smoothstep(np.minimum(np.minimum(u - u_lo, u_hi - u), np.minimum(v - v_lo, v_hi - v)) / ramp)
    upper_weight, lower_fade, side_weight = upper_weight * inside, lower_fade * inside, side_weight * inside
    jaw_weight = lateral * lower_fade

    lip_colour, teeth_colour = _colours(image, landmarks)
    return MouthGeometry(
        box=(int(top), int(bottom), int(left), int(right)), origin=origin.astype(np.float32), eu=eu.astype(np.float32),
        ev=ev, half_width=half_width, inner_half_width=inner_half_width,
        ref_gap=ref_gap, x=xs, y=ys, u=u, v=v, index=index, frac=frac,
        upper_weight=upper_weight.astype(np.float32), jaw_blend=jaw_blend.astype(np.float32),
        jaw_weight=jaw_weight.astype(np.float32), lower_fade=lower_fade.astype(np.float32),
        side_weight=side_weight.astype(np.float32), grid_u=grid_u, upper_inner=upper_inner,
        lower_inner=lower_inner, lip_colour=lip_colour, teeth_colour=teeth_colour)


def _colours(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colours of the lips (median of points halfway between the outer and inner lip lines) and of the
    teeth to paint, whose brightness follows the skin below the mouth so they sit in the picture's exposure."""
    height, width = image.shape[:2]

    def at(points: np.ndarray) -> np.ndarray:
        x = np.clip(np.round(points[:, 0]).astype(int), 0, width - 1)
        y = np.clip(np.round(points[:, 1]).astype(int), 0, height - 1)
        return image[y, x].astype(np.float32)

    middle = slice(2, -2)  # away from the corners, where the lip lines meet
    lip_points = np.concatenate([
        (landmarks[face.OUTER_UPPER_LIP][middle] + landmarks[face.INNER_UPPER_LIP][middle]) / 2,
        (landmarks[face.OUTER_LOWER_LIP][middle] + landmarks[face.INNER_LOWER_LIP][middle]) / 2])
    lip_colour = np.median(at(lip_points), axis=0)
    skin = np.median(at(landmarks[face.BELOW_MOUTH_SKIN]), axis=0)
    teeth = np.array([236.0, 232.0, 222.0]) * np.clip(skin.mean() / 170.0, 0.55, 1.0)
    return lip_colour.astype(np.float32), teeth.astype(np.float32)


def render(image: np.ndarray, geometry: MouthGeometry, opening: float, width: float) -> np.ndarray:
    """``image`` with its mouth set to ``opening`` (0..1) and ``width`` (-1 rounded .. +1 spread)."""
    g = geometry
    top, bottom, left, right = g.box
    corner_shift, inner_half = _corners(g, opening, width)

    # Where each lip goes per column, and the cavity between them (output rows, mouth frame).
    upper_shift, lower_shift, hole_top, hole_bottom = _lip_shifts(g, opening, width, inner_half)
    jaw_shift = float(np.interp(0.0, g.grid_u, lower_shift))

    seam = g.lookup(0.5 * (hole_top + hole_bottom))
    lower_lip = g.lookup(lower_shift)
    upper_motion = g.upper_weight * g.lookup(upper_shift)
    lower_motion = ((1 - g.jaw_blend) * lower_lip * g.lower_fade + g.jaw_blend * jaw_shift * g.jaw_weight)
    dv = np.where(g.v < seam, upper_motion, lower_motion)
    du = corner_shift * g.side_weight
    map_x = g.x - du * g.eu[0] - dv * g.ev[0]
    map_y = g.y - du * g.eu[1] - dv * g.ev[1]
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    out = image.copy()
    region = warped.astype(np.float32)
    _paint_cavity(region, g, hole_top, hole_bottom, inner_half)
    out[top:bottom, left:right] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
    return out


def cavity_profiles(g: MouthGeometry, opening: float, width: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Where the lips part at ``opening``/``width``: the cavity's top and bottom per column (mouth frame,
    output rows) and the inner half-width of the new mouth."""
    _, inner_half = _corners(g, opening, width)
    shifts = _lip_shifts(g, opening, width, inner_half)
    return shifts[2], shifts[3], inner_half


def _corners(g: MouthGeometry, opening: float, width: float) -> tuple[float, float]:
    """How far the corners move sideways (spread or rounded, a little inwards as the jaw drops), and the
    new inner half-width."""
    corner_shift = g.half_width * (SPREAD * max(width, 0.0) + ROUND * min(width, 0.0) - OPEN_NARROWING * opening)
    return corner_shift, max(g.inner_half_width + corner_shift * g.inner_half_width / g.half_width, 1.0)


def _lip_shifts(g: MouthGeometry, opening: float, width: float, inner_half: float):
    """Per column: where each inner lip goes (shifts), and the cavity between them (output rows)."""
    shape = np.clip(1.0 - (g.grid_u / inner_half) ** 2, 0.0, 1.0) ** 0.6
    gap = MAX_GAP * g.inner_half_width * opening * shape * (1.0 + 0.15 * max(-width, 0.0))
    mid = g.mid
    upper_shift = mid - UPPER_SHARE * gap - g.upper_inner
    lower_shift = mid + (1 - UPPER_SHARE) * gap - g.lower_inner
    half_sum = 0.5 * (upper_shift + lower_shift)
    return upper_shift, lower_shift, mid + np.minimum(upper_shift, half_sum), mid + np.maximum(lower_shift, half_sum)


def _paint_cavity(region: np.ndarray, g: MouthGeometry, hole_top: np.ndarray, hole_bottom: np.ndarray,
                  inner_half: float) -> None:
    """Paint the inner mouth where the lips parted (in place): a shaded throat, the tongue rising from
    below, the edge of the lower teeth, upper teeth where the image showed none, and soft edges where it
    meets lips and teeth (a hard edge reads as a cut-out at close range)."""
    height = hole_bottom - hole_top
    if float(height.max()) < 0.35:
        return
    feather = max(1.0, FEATHER * g.inner_half_width)
    columns = np.nonzero(height > 0.05)[0]
    u_min, u_max = g.grid_u[columns[0]] - 1, g.grid_u[columns[-1]] + 1
    v_min = float(hole_top[columns].min()) - 1 - feather
    v_max = float(hole_bottom[columns].max()) + 1 + feather
    inside = (g.u >= u_min) & (g.u <= u_max) & (g.v >= v_min) & (g.v <= v_max)
    rows, cols = np.nonzero(inside)
    if rows.size == 0:
        return
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    u, v = g.u[r0:r1, c0:c1], g.v[r0:r1, c0:c1]
    index, frac = g.index[r0:r1, c0:c1], g.frac[r0:r1, c0:c1]

    top, bottom = at_columns(hole_top, index, frac), at_columns(hole_bottom, index, frac)
    size = np.maximum(bottom - top, 1e-3)
    depth = np.clip((v - top) / size, 0, 1)  # 0 at the upper lip, 1 at the lower lip
    across = np.abs(u) / inner_half  # 0 in the middle, 1 at the corners
    wide = smoothstep(size / (0.35 * g.inner_half_width))  # 0 for a slit, 1 once the mouth is well open
    # Coverage: a soft edge about 2 x feather wide at each lip, thin slivers fade in.
    alpha = (smoothstep((v - top + feather) / (2 * feather)) * smoothstep((bottom - v + feather) / (2 * feather))
             * np.clip(size * 1.5, 0, 1))
    lip = g.lip_colour[None, None, :]
    # The throat: warm and dark, darkest just behind the upper teeth and towards the corners.
    shade = (0.6 + 0.45 * smoothstep((depth - 0.15) / 0.85)) * (1.0 - 0.6 * across ** 2)
    colour = lip * np.array([0.42, 0.2, 0.2], np.float32) * shade[..., None]
    # The tongue: a dome rising from the lower lip, lit along its ridge, fading into the dark at its back.
    ridge = 1.0 - TONGUE_RISE * wide * (1 - across ** 2)
    tongue = smoothstep((depth - ridge) / 0.22 + 0.5) * (1 - smoothstep((across - 0.55) / 0.4)) * (0.35 + 0.65 * wide)
    lit = 0.55 + 0.3 * (1 - smoothstep(np.abs(depth - ridge - 0.12) / 0.25)) - 0.25 * across
    colour += tongue[..., None] * (lip * np.array([0.78, 0.42, 0.42], np.float32) * lit[..., None] - colour)
    # Under the upper edge, the back of the teeth (or the lip's inner face) in shadow: dim, not black.
    underside = (1 - smoothstep((v - top) / (2.0 * feather))) * (1 - 0.5 * across)
    colour += underside[..., None] * (lip * 0.42 - colour)
    # The lower teeth's edge, just above the lower lip in the middle of a wide-open mouth.
    band = LOWER_TEETH * g.inner_half_width * wide
    lower_teeth = (smoothstep((v - (bottom - band)) / np.maximum(0.5 * band, 0.5))
                   * (1 - smoothstep((across - 0.35) / 0.3)) * 0.5 * wide ** 2)
    colour += lower_teeth[..., None] * (g.teeth_colour[None, None, :] * 0.88 - colour)
    _paint_upper_teeth(colour, g, u, v, top, size, across)
    patch = region[r0:r1, c0:c1]
    patch += alpha[..., None] * (colour - patch)


def _paint_upper_teeth(colour: np.ndarray, g: MouthGeometry, u: np.ndarray, v: np.ndarray, top: np.ndarray,
                       size: np.ndarray, across: np.ndarray) -> None:
    """Upper teeth, only where the image showed none: a band under the upper lip, tallest at the middle,
    shadowed by the lip above and lost in the dark towards the corners, with faint gaps between teeth.
    Fades out (rather than switching off) as the image's own mouth opens, so a video does not flicker."""
    shows_teeth = 1.0 - float(smoothstep((g.ref_gap / g.inner_half_width - 0.1) / 0.15))
    if shows_teeth <= 0:
        return
    band = np.minimum(0.28 * size, 0.24 * g.inner_half_width) * (1 - 0.35 * across ** 2)
    teeth = (1 - smoothstep(v - top - band + 0.5)) * (1 - smoothstep((across - 0.45) / 0.35))
    teeth *= smoothstep(size / (0.3 * g.inner_half_width))
    gaps = (0.5 + 0.5 * np.cos(2 * np.pi * u / (0.24 * g.half_width))) ** 12
    lit = (0.72 + 0.28 * smoothstep((v - top) / np.maximum(0.6 * band, 0.5))) * (1 - 0.12 * gaps)
    teeth *= 0.8 * shows_teeth
    colour += teeth[..., None] * (g.teeth_colour[None, None, :] * lit[..., None] - colour)
