"""Drawing a synthetic face with OpenCV: colours, head and hair, the features, photo degradations.

Everything is drawn from the same projected curves the landmarks are sampled from (image pixels,
anti-aliased polygons with 4 bits of sub-pixel precision), so each landmark sits on a visible edge
or blob: the jaw on the skin/background or skin/neck edge, brows and lids on their polygons,
pupils on the iris, the nose points on the shaded bridge, alar crease and nostrils, the lip points
on the lip polygons. Colours are RGB; the image is (H, W, 3) uint8 RGB until the JPEG encoder.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from facemark.data.synth_face import FaceParams, face_depth, grid, sample_curve

SHIFT = 4                 # cv2 fixed-point bits: sub-pixel accurate polygons
AA = cv2.LINE_AA
HAIR_COLOURS = np.array([[20, 15, 12], [55, 38, 25], [105, 70, 42], [185, 150, 100], [140, 138, 135],
                         [145, 68, 35], [225, 222, 215]], dtype=np.float64)
IRIS_COLOURS = np.array([[75, 48, 28], [38, 25, 16], [70, 110, 150], [80, 110, 70], [105, 108, 100]],
                        dtype=np.float64)
BACKGROUND_DOWNSCALE = 4
NOISE_BANK_SIGMA = 16.0
NOISE_BANK_SIZE = 768     # a fixed bank of Gaussian noise; faces take seeded windows of it (fast)


@dataclass(frozen=True)
class Palette:
    """RGB colours of one face and its scene (floats 0..255)."""

    skin: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    lip: np.ndarray
    iris: np.ndarray
    sclera: np.ndarray
    clothes: np.ndarray
    background: tuple[np.ndarray, np.ndarray]


def _colour(value: np.ndarray) -> tuple[float, ...]:
    return tuple(min(255.0, max(0.0, float(v))) for v in value)   # plain Python: np.clip is slow on 3 values


def sample_palette(rng: np.random.Generator) -> Palette:
    tone = rng.uniform()
    skin = (1 - tone) * np.array([78.0, 50, 38]) + tone * np.array([240.0, 205, 185]) + rng.uniform(-12, 12, 3)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.15)
    brow = skin + rng.uniform(0.5, 0.85) * (hair * 0.7 - skin)
    if skin.mean() - brow.mean() < 30:   # light hair on light skin: brows must still show
        brow = skin * rng.uniform(0.45, 0.65)
    lip = (skin + rng.uniform(0.4, 0.75) * (np.array([175.0, 70, 80]) - skin)) * rng.uniform(0.8, 1.0)
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * rng.uniform(0.8, 1.2)
    sclera = np.array([238.0, 232, 222]) * rng.uniform(0.85, 1.0)
    clothes = rng.uniform(0, 255, 3)
    background = (_muted(rng.uniform(0, 255, 3), rng), _muted(rng.uniform(0, 255, 3), rng))
    return Palette(skin, hair, brow, lip, iris, sclera, clothes, background)


def _ellipse3(cx: float, cy: float, rx: float, ry: float, z: float, count: int = 24,
              start: float = 0.0, stop: float = 2 * np.pi) -> np.ndarray:
    angle = grid(start, stop, count)
    out = np.empty((count, 3))
    out[:, 0], out[:, 1], out[:, 2] = cx + rx * np.cos(angle), cy + ry * np.sin(angle), z
    return out


def scene_shapes(p: FaceParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Drawing-only shapes in the canonical frame, (N, 3) each: head outline over the forehead,
    hair (back, and the cap above the hairline unless bald), ears, neck, clothes, nostrils, tip."""
    top = p.jaw_top
    head = _ellipse3(0.0, top, 1.0, p.head_height, 0.0, 40, 0.0, -np.pi)       # right -> over -> left
    hair_w, hair_len = rng.uniform(1.08, 1.3), rng.uniform(0.2, 2.6)
    crown = _ellipse3(0.0, top, hair_w, p.head_height * rng.uniform(1.05, 1.2), -0.3, 40, np.pi, 2 * np.pi)
    back = np.concatenate([[[-hair_w, top + hair_len, -0.3]], crown, [[hair_w, top + hair_len, -0.3]]])
    shapes = {"head": head, "hair_back": back}
    if rng.uniform() > 0.12:
        shapes["hair_cap"] = _hair_cap(p, rng)
    for side, mirror in (("l", -1.0), ("r", 1.0)):
        shapes[f"ear_{side}"] = _ellipse3(mirror * 0.98, 0.2 * p.nose_len, 0.14, 0.3, -0.2)
        shapes[f"nostril_{side}"] = _ellipse3(mirror * 0.09 * p.nose_w, 0.565 * p.nose_len, 0.05 * p.nose_w,
                                              0.02, face_depth(0.0) + 0.2, 16)
    shapes["tip"] = _ellipse3(0.0, 0.43 * p.nose_len, 0.07 * p.nose_w, 0.045, face_depth(0.0) + p.nose_depth, 16)
    neck_w = rng.uniform(0.45, 0.6)
    shapes["neck"] = np.array([[-neck_w, 0.6, -0.3], [neck_w, 0.6, -0.3], [neck_w * 1.1, 3.5, -0.3],
                               [-neck_w * 1.1, 3.5, -0.3]])
    shoulder = p.chin + rng.uniform(0.5, 0.9)
    shapes["clothes"] = np.array([[-0.6, shoulder, -0.3], [0.0, shoulder + rng.uniform(0.1, 0.6), -0.3],
                                  [0.6, shoulder, -0.3], [2.6, shoulder + 0.5, -0.3], [3.2, 8.0, -0.3],
                                  [-3.2, 8.0, -0.3], [-2.6, shoulder + 0.5, -0.3]])
    return shapes


def _hair_cap(p: FaceParams, rng: np.random.Generator) -> np.ndarray:
    """Hair above a wavy hairline that stays above the brows: the head arc above the hairline
    (right -> left) closed by the hairline (left -> right)."""
    hairline_y = rng.uniform(p.jaw_top - p.head_height + 0.35, -0.65)
    drop, wave, phase = rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.05), rng.uniform(0, 2 * np.pi)
    x = grid(-1.0, 1.0, 41)
    hairline = hairline_y + drop * x ** 2 + wave * np.sin(9 * x + phase)
    arc = _ellipse3(0.0, p.jaw_top, 1.0, p.head_height, 0.0, 60, 0.0, -np.pi)
    arc = arc[arc[:, 1] <= np.interp(arc[:, 0], x, hairline)]
    inside = (x > arc[:, 0].min()) & (x < arc[:, 0].max())
    line = np.stack([x[inside], hairline[inside], face_depth(x[inside])], axis=1)
    return np.concatenate([arc, line])


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << SHIFT)).astype(np.int32)


def _fill(image: np.ndarray, points: np.ndarray, colour: np.ndarray) -> None:
    cv2.fillPoly(image, [_fixed(points)], _colour(colour), AA, SHIFT)


def _line(image: np.ndarray, points: np.ndarray, colour: np.ndarray, width: float) -> None:
    cv2.polylines(image, [_fixed(points)], False, _colour(colour), max(1, int(round(width))), AA, SHIFT)


def _segment(curve: np.ndarray, start: float, stop: float, count: int = 12) -> np.ndarray:
    return sample_curve(curve, grid(start, stop, count))


def draw_background(width: int, height: int, palette: Palette, rng: np.random.Generator) -> np.ndarray:
    """Gradient + low-frequency colour blotches + a few random shapes, drawn at a quarter of the
    resolution and upscaled (fast, and out of focus like a real background): (H, W, 3) uint8."""
    low = (max(8, width // BACKGROUND_DOWNSCALE), max(8, height // BACKGROUND_DOWNSCALE))
    corners = np.array([palette.background[rng.integers(2)] for _ in range(4)]).reshape(2, 2, 3)
    cells = int(rng.integers(3, 12))
    blotches = rng.uniform(-40, 40, (cells, cells, 3)).astype(np.float32)
    image = (cv2.resize(corners.astype(np.float32), low, interpolation=cv2.INTER_LINEAR)
             + cv2.resize(blotches, low, interpolation=cv2.INTER_CUBIC))
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 9))):
        colour = _colour(_muted(rng.uniform(0, 255, 3), rng))
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * low[0])
        y0, y1 = sorted(rng.uniform(-0.2, 1.2, 2) * low[1])
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), colour, -1, AA)
        elif kind == 1:
            cv2.ellipse(image, (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int((x1 - x0) / 3) + 1,
                        int((y1 - y0) / 3) + 1), float(rng.uniform(0, 180)), 0, 360, colour, -1, AA)
        else:
            cv2.line(image, (int(x0), int(y0)), (int(x1), int(y1)), colour, int(rng.integers(1, 4)), AA)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def _muted(colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pull a random colour towards its grey: real backgrounds are rarely fully saturated."""
    grey = colour.mean()
    return grey + rng.uniform(0.15, 0.8) * (colour - grey)


def _draw_eye(image: np.ndarray, shapes: dict[str, np.ndarray], side: str, palette: Palette, unit: float) -> None:
    """Sclera, then iris/pupil/highlight clipped to the lids (alpha mask on a small ROI), then lids."""
    upper, lower = shapes[f"eye_{side}_up"], shapes[f"eye_{side}_lo"]
    outline = np.concatenate([upper, lower[::-1]])
    _fill(image, outline, palette.sclera)
    x0, y0 = np.floor(outline.min(0)).astype(int) - 2
    x1, y1 = np.ceil(outline.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, image.shape[1]), min(y1, image.shape[0])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    roi = image[y0:y1, x0:x1]
    offset = np.array([x0, y0], dtype=np.float64)
    mask = np.zeros(roi.shape[:2], np.uint8)
    _fill(mask, outline - offset, np.array([255.0]))
    layer = roi.copy()
    centre, iris = shapes[f"eye_{side}_c"][0] - offset, shapes[f"eye_{side}_iris"] - offset
    _fill(layer, iris, palette.iris)
    _fill(layer, centre + (iris - centre) * 0.72, palette.iris * 0.6)    # darker inner ring
    _fill(layer, centre + (iris - centre) * 0.42, np.array([12.0, 10, 10]))
    glint = shapes[f"eye_{side}_hl"][0] - offset
    _fill(layer, glint + (iris - centre) * 0.14, np.array([250.0, 250, 250]))
    alpha = mask[..., None].astype(np.float32) / 255.0
    roi[:] = (roi * (1 - alpha) + layer * alpha).astype(np.uint8)
    _line(image, upper, palette.skin * 0.25, 0.02 * unit)
    _line(image, lower, palette.skin * 0.6, 0.008 * unit)
    crease = upper + 0.45 * (upper - lower)     # follows the lid, in the face's own "up"
    _line(image, crease[3:-3], palette.skin * 0.8, 0.008 * unit)


def _draw_nose(image: np.ndarray, shapes: dict[str, np.ndarray], palette: Palette, unit: float) -> None:
    for side in ("l", "r"):
        nose = shapes[f"nose_{side}"]
        _line(image, _segment(nose, 0.0, 0.35), palette.skin * 0.85, 0.03 * unit)   # bridge side shade
        _line(image, _segment(nose, 0.25, 0.85), palette.skin * 0.62, 0.014 * unit)  # wing and alar crease
        _fill(image, shapes[f"nostril_{side}"], palette.skin * 0.3)
    _fill(image, shapes["tip"], np.minimum(palette.skin * 1.12 + 8, 255))
    _line(image, shapes["bridge"][:-2], np.minimum(palette.skin * 1.08 + 6, 255), 0.02 * unit)


def _draw_mouth(image: np.ndarray, shapes: dict[str, np.ndarray], palette: Palette, unit: float,
                teeth: bool) -> None:
    upper_in, lower_in = shapes["lip_iu"], shapes["lip_il"]
    _fill(image, np.concatenate([upper_in, lower_in[::-1]]), np.array([70.0, 22, 28]))
    if teeth:
        _fill(image, np.concatenate([upper_in, (upper_in + 0.45 * (lower_in - upper_in))[::-1]]),
              np.array([232.0, 228, 214]))
    _fill(image, np.concatenate([shapes["lip_ou"], upper_in[::-1]]), palette.lip * 0.92)
    _fill(image, np.concatenate([shapes["lip_ol"], lower_in[::-1]]), palette.lip)
    _line(image, upper_in, palette.lip * 0.45, 0.012 * unit)


def draw_face(shapes: dict[str, np.ndarray], palette: Palette, width: int, height: int, unit: float,
              rng: np.random.Generator) -> np.ndarray:
    """Render the scene: `shapes` are (N, 2) image-pixel curves (features and scene_shapes);
    `unit` is pixels per canonical unit (line widths). -> (H, W, 3) uint8 RGB."""
    image = draw_background(width, height, palette, rng)
    _fill(image, shapes["hair_back"], palette.hair * 0.85)
    _fill(image, shapes["neck"], palette.skin * 0.72)
    _fill(image, shapes["clothes"], palette.clothes)
    for side in ("l", "r"):
        _fill(image, shapes[f"ear_{side}"], palette.skin * 0.88)
    _fill(image, np.concatenate([shapes["jaw"], shapes["head"]]), palette.skin)
    if "hair_cap" in shapes:
        _fill(image, shapes["hair_cap"], palette.hair)
    for side in ("l", "r"):
        _fill(image, np.concatenate([shapes[f"brow_{side}_up"], shapes[f"brow_{side}_lo"][::-1]]), palette.brow)
        _draw_eye(image, shapes, side, palette, unit)
    _draw_nose(image, shapes, palette, unit)
    gap = np.median(np.linalg.norm(shapes["lip_il"] - shapes["lip_iu"], axis=1))
    _draw_mouth(image, shapes, palette, unit, teeth=gap > 0.03 * unit and rng.uniform() < 0.7)
    return image


@functools.cache
def _noise_bank() -> np.ndarray:
    """(768, 768, 3) uint8 Gaussian noise 128 + 16 N(0, 1), from a fixed seed (same in every process)."""
    normal = np.random.default_rng(20240917).standard_normal((NOISE_BANK_SIZE, NOISE_BANK_SIZE, 3), np.float32)
    return np.clip(128.0 + NOISE_BANK_SIGMA * normal, 0, 255).astype(np.uint8)


def _occlude(image: np.ndarray, face_box: np.ndarray, palette: Palette, rng: np.random.Generator) -> None:
    """A rectangle or ellipse (plain, skin-like 'hand', or noisy) over part of the face box."""
    x0, y0, x1, y1 = face_box
    size = np.array([x1 - x0, y1 - y0])
    centre = np.array([x0, y0]) + rng.uniform(0.1, 0.9, 2) * size
    axes = rng.uniform(0.12, 0.3, 2) * size
    colour = palette.skin * rng.uniform(0.8, 1.1) if rng.uniform() < 0.3 else rng.uniform(0, 255, 3)
    angle = float(rng.uniform(0, 180))
    rotated_rect = ((float(centre[0]), float(centre[1])), (float(2 * axes[0]), float(2 * axes[1])), angle)
    if rng.uniform() < 0.5:
        _fill(image, cv2.boxPoints(rotated_rect), colour)
    else:
        cv2.ellipse(image, rotated_rect, _colour(colour), -1, AA)


def finish(image: np.ndarray, face_box: np.ndarray, palette: Palette, rng: np.random.Generator) -> bytes:
    """Occluder (~20 % of faces), lighting gradient, blur, sensor noise, JPEG -> encoded bytes."""
    height, width = image.shape[:2]
    if rng.uniform() < 0.2:
        _occlude(image, face_box, palette, rng)
    corner_gain = rng.uniform(0.6, 1.25, (2, 2, 1)) * rng.uniform(0.9, 1.1, 3)   # brightness x tint
    gain = cv2.resize(np.round(corner_gain * 128).astype(np.uint8), (width, height),
                      interpolation=cv2.INTER_LINEAR)
    sigma = rng.uniform(0.0, 1.4) * max(width, height) / 384
    if sigma > 0.4:
        ksize = 2 * int(np.ceil(2.5 * sigma)) + 1
        image = cv2.GaussianBlur(image, (ksize, ksize), sigma)
    image = cv2.multiply(image, gain, scale=1.0 / 128)
    noise = float(9.0 * rng.uniform() ** 2)
    oy, ox = rng.integers(0, NOISE_BANK_SIZE - 512, 2)
    if noise > 0.5:   # bank is 128 + 16 N(0, 1) in uint8: one saturating uint8 pass adds noise * N(0, 1)
        weight = noise / NOISE_BANK_SIGMA
        image = cv2.addWeighted(image, 1.0, _noise_bank()[oy:oy + height, ox:ox + width], weight, -128.0 * weight)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))])
    if not ok:
        raise RuntimeError("cv2.imencode failed on a synthetic face")   # internal: should never happen
    return encoded.tobytes()
