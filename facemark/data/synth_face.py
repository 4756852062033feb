"""The parametric face behind `facemark synth`: random shape -> dense 3D curves -> any scheme.

Canonical face frame, in units of the jaw half-width: x to the image right, y down, z towards the
camera. The jaw's top ends sit near (+-1, 0) at eye level and the chin near y = 1.55; the
proportions follow the median 300-W face (eye corners at +-0.63 and +-0.27, brows near y = -0.3,
nose tip 0.45, mouth corners +-0.4 at 0.87). "Left" and "right" always mean image-left and
image-right, as in every landmark scheme.

Each feature is a dense polyline (N, 3) parametrised by u in [0, 1] (index u * (N - 1)); a scheme
is a table of (curve, u) per landmark index, so lapa106, ibug68, wflw98 and datatang106 sample one
and the same face, and the picture never depends on the scheme. Conventions for u: jaw from the
left top through the chin to the right top (uniform in arc length); brows and eyelids from the
outer end (0) to the inner end (1); nose sides from the bridge side at eye level (0) over the
wing, the alar crease and the nostril to the subnasale (1), with those five anatomical points at
u = k/5; lips from the image-left corner (0) to the image-right corner (1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

JAW_SAMPLES = 97          # 96 segments: u = i/32 and u = i/16 land on samples
LID_SAMPLES = 25          # 24 segments: quarters, thirds and sixths land on samples
LIP_SAMPLES = 49
NOSE_SEGMENT = 8          # Catmull-Rom samples per segment of the nose side
POSE_DEGREES = ((12.0, 28.0), (6.0, 15.0), (12.0, 30.0))   # (sd, limit) of yaw, pitch, roll


@dataclass(frozen=True)
class FaceParams:
    """Random shape of one face (canonical units); *_l / *_r are per side so faces are not
    perfectly symmetric."""

    jaw_top: float        # y of the jaw's top ends
    chin: float           # y of the chin
    jaw_power: float      # superellipse exponent: 2 = ellipse, larger = squarer jaw
    jaw_taper: float      # narrows the lower jaw (V shape)
    head_height: float    # forehead + crown above jaw_top
    brow_y: tuple[float, float]
    brow_arch: float
    brow_thick: float
    brow_len: float
    eye_x: float
    eye_y: tuple[float, float]
    eye_w: tuple[float, float]   # eye half-widths
    lid_up: tuple[float, float]  # upper lid opening above the corner line
    lid_lo: tuple[float, float]
    eye_tilt: float       # outer corners higher (> 0) than inner ones
    gaze: tuple[float, float]    # iris offset in eye half-widths / lid units
    iris: float           # iris radius / eye half-width
    highlight: float      # x offset of the corneal highlight (iris radii)
    nose_len: float
    nose_w: float
    nose_depth: float
    mouth_y: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    mouth_open: float
    smile: float
    bow: float            # depth of the cupid's bow dip (fraction of lip_up)


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Draw one face shape; ranges cover the spread of real faces without caricature."""
    u = rng.uniform

    def side(lo: float, hi: float, jitter: float) -> tuple[float, float]:
        base = u(lo, hi)
        return base + u(-jitter, jitter), base + u(-jitter, jitter)

    is_open = u() < 0.45
    return FaceParams(
        jaw_top=u(-0.08, 0.04), chin=u(1.35, 1.75), jaw_power=u(1.8, 2.7), jaw_taper=u(0.0, 0.25),
        head_height=u(1.15, 1.45),
        brow_y=side(-0.42, -0.30, 0.02), brow_arch=u(0.04, 0.13), brow_thick=u(0.05, 0.11),
        brow_len=u(0.6, 0.75),
        eye_x=u(0.41, 0.49), eye_y=side(-0.06, 0.0, 0.01), eye_w=side(0.16, 0.21, 0.008),
        lid_up=side(0.05, 0.10, 0.008), lid_lo=side(0.025, 0.05, 0.005), eye_tilt=u(-0.02, 0.05),
        gaze=(u(-0.15, 0.15), u(-0.01, 0.01)), iris=u(0.36, 0.44), highlight=u(-0.3, 0.3),
        nose_len=u(0.85, 1.15), nose_w=u(0.8, 1.2), nose_depth=u(0.25, 0.45),
        mouth_y=u(0.82, 0.95), mouth_w=u(0.31, 0.45), lip_up=u(0.05, 0.09), lip_lo=u(0.08, 0.15),
        mouth_open=u(0.02, 0.14) if is_open else 0.0, smile=u(-0.02, 0.06), bow=u(0.2, 0.7),
    )


def face_depth(x: np.ndarray) -> np.ndarray:
    """z of the face surface at canonical x: a rounded front, zero at the silhouette."""
    return 0.8 * np.sqrt(np.maximum(1.0 - (np.asarray(x) / 1.05) ** 2, 0.0))


def _xyz(x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
    out = np.empty((len(x), 3))
    out[:, 0], out[:, 1], out[:, 2] = x, y, z
    return out


@functools.cache
def grid(start: float, stop: float, count: int, endpoint: bool = True) -> np.ndarray:
    """np.linspace, cached and read-only: the same few grids are needed for every face."""
    values = np.linspace(start, stop, count, endpoint=endpoint)
    values.flags.writeable = False
    return values


def _resample_arclength(points: np.ndarray, count: int) -> np.ndarray:
    """(N, 3) polyline -> (count, 3) evenly spaced along its x-y length (annotators' spacing)."""
    step = np.linalg.norm(np.diff(points[:, :2], axis=0), axis=1)
    length = np.concatenate([[0.0], np.cumsum(step)])
    target = np.linspace(0.0, length[-1], count)
    return np.stack([np.interp(target, length, points[:, k]) for k in range(3)], axis=1)


def _jaw(p: FaceParams) -> np.ndarray:
    angle = grid(np.pi, 0.0, 4 * JAW_SAMPLES)
    cos, sin = np.cos(angle), np.abs(np.sin(angle))
    exponent = 2.0 / p.jaw_power
    x = np.sign(cos) * np.abs(cos) ** exponent * (1.0 - p.jaw_taper * sin ** 4)
    y = p.jaw_top + (p.chin - p.jaw_top) * sin ** exponent
    z = 0.75 * np.maximum(1.0 - np.abs(x), 0.0) ** 0.7   # chin in front, sides on the silhouette
    return _resample_arclength(_xyz(x, y, z), JAW_SAMPLES)


def _brows(p: FaceParams, mirror: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower edge of one brow, u = 0 at the pointed outer tip, 1 at the blunt inner end."""
    u = grid(0.0, 1.0, LID_SAMPLES)
    inner, outer = 0.16, 0.16 + p.brow_len
    x = mirror * (outer + (inner - outer) * u)
    upper = p.brow_y[k] + 0.14 * (1 - u) + 0.08 * u - p.brow_arch * np.sin(np.pi * u ** 0.85)
    lower = upper + p.brow_thick * np.sqrt(u) * (1.0 - 0.25 * u)
    z = face_depth(x) + 0.05
    return _xyz(x, upper, z), _xyz(x, lower, z)


def _eye(p: FaceParams, mirror: float, k: int) -> dict[str, np.ndarray]:
    """Eyelids (u = 0 outer corner, 1 inner), iris circle, iris centre and corneal highlight."""
    u = grid(0.0, 1.0, LID_SAMPLES)
    centre_x, half_w = mirror * p.eye_x, p.eye_w[k]
    x = centre_x + mirror * half_w * (1.0 - 2.0 * u)
    base = p.eye_y[k] + p.eye_tilt * (u - 0.5)
    z = face_depth(centre_x) - 0.03
    upper = base - p.lid_up[k] * np.sin(np.pi * u ** 1.1) ** 0.8
    lower = base + p.lid_lo[k] * np.sin(np.pi * u) ** 0.9
    radius = p.iris * half_w
    iris_x = centre_x + p.gaze[0] * half_w     # both eyes look the same way
    iris_y = p.eye_y[k] + (p.lid_lo[k] - p.lid_up[k]) / 2.0 + p.gaze[1]
    angle = grid(0.0, 2.0 * np.pi, 32, endpoint=False)
    circle = _xyz(iris_x + radius * np.cos(angle), iris_y + radius * np.sin(angle), z)
    centre = _xyz(np.array([iris_x]), np.array([iris_y]), z)
    highlight = centre + np.array([p.highlight * radius, -0.45 * radius, 0.0])
    return {"up": _xyz(x, upper, z), "lo": _xyz(x, lower, z), "iris": circle,
            "c": centre, "hl": highlight}


def _catmull_rom(control: np.ndarray, per_segment: int) -> np.ndarray:
    """Uniform Catmull-Rom through (K, 3) control points; control k lands on sample k * per_segment."""
    padded = np.concatenate([2 * control[:1] - control[1:2], control, 2 * control[-1:] - control[-2:-1]])
    t = grid(0.0, 1.0, per_segment, endpoint=False)[:, None]
    pieces = []
    for i in range(len(control) - 1):
        p0, p1, p2, p3 = padded[i:i + 4]
        pieces.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                             + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    return np.concatenate(pieces + [control[-1:]])


def _nose(p: FaceParams, mirror: float) -> np.ndarray:
    """One nose side: bridge side, wing top, alar crease, alar base, nostril, subnasale (u = k/5)."""
    n_len, n_w, top = p.nose_len, p.nose_w, face_depth(0.0)
    control = np.array([
        [-0.13, 0.00, top + 0.05], [-0.165 * n_w, 0.30 * n_len, top + 0.12],
        [-0.25 * n_w, 0.47 * n_len, top + 0.08], [-0.20 * n_w, 0.565 * n_len, top + 0.10],
        [-0.10 * n_w, 0.60 * n_len, top + 0.6 * p.nose_depth], [0.0, 0.625 * n_len, top + 0.6 * p.nose_depth],
    ])
    control[:, 0] *= -mirror
    return _catmull_rom(control, NOSE_SEGMENT)


def _lips(p: FaceParams) -> dict[str, np.ndarray]:
    """Outer/inner, upper/lower lip curves from the image-left corner (u = 0) to the right (1)."""
    s = grid(0.0, 1.0, LIP_SAMPLES)
    inner_start = 0.06   # the inner corners sit a little inside the outer ones, as in LaPa
    s_in = inner_start + (1.0 - 2.0 * inner_start) * s
    line = lambda t: p.mouth_y - p.smile * (2.0 * t - 1.0) ** 2
    bulge = np.sin(np.pi * s) ** 0.8   # opening profile; zero at the outer and at the inner corners
    bow = 1.0 - p.bow * np.exp(-(((s - 0.5) / 0.07) ** 2))
    z_out, z_in = face_depth(p.mouth_w * (2 * s - 1)) + 0.08, face_depth(p.mouth_w * (2 * s_in - 1)) + 0.05
    x_out, x_in = p.mouth_w * (2 * s - 1), p.mouth_w * (2 * s_in - 1)
    up_out = line(s) - 0.3 * p.mouth_open * bulge - p.lip_up * np.sin(np.pi * s) ** 0.6 * bow
    lo_out = line(s) + 0.7 * p.mouth_open * bulge + p.lip_lo * np.sin(np.pi * s) ** 0.75
    up_in = line(s_in) - 0.3 * p.mouth_open * bulge
    lo_in = line(s_in) + 0.7 * p.mouth_open * bulge
    return {"lip_ou": _xyz(x_out, up_out, z_out), "lip_ol": _xyz(x_out, lo_out, z_out),
            "lip_iu": _xyz(x_in, up_in, z_in), "lip_il": _xyz(x_in, lo_in, z_in)}


def face_curves(p: FaceParams) -> dict[str, np.ndarray]:
    """All landmark-bearing curves of a face: name -> (N, 3) canonical points (see module doc)."""
    curves = {"jaw": _jaw(p)}
    for side, mirror, k in (("l", -1.0, 0), ("r", 1.0, 1)):
        curves[f"brow_{side}_up"], curves[f"brow_{side}_lo"] = _brows(p, mirror, k)
        for part, value in _eye(p, mirror, k).items():
            curves[f"eye_{side}_{part}"] = value
        curves[f"nose_{side}"] = _nose(p, mirror)
    curves["subnasale"] = curves["nose_l"][-1:]   # where both nose sides meet, on the midline
    top = face_depth(0.0)
    t = grid(0.0, 1.0, 13)
    bridge_y = -0.06 + (0.45 * p.nose_len + 0.06) * t                 # eye level -> nose tip
    curves["bridge"] = _xyz(np.zeros(13), bridge_y, top + 0.05 + p.nose_depth * t ** 1.5)
    curves.update(_lips(p))
    return curves


def sample_curve(curve: np.ndarray, u: float | np.ndarray) -> np.ndarray:
    """Points at parameters u in [0, 1] (scalar or (K,)) of an (N, D) polyline, interpolated
    between samples -> (D,) or (K, D)."""
    u = np.asarray(u, dtype=np.float64)
    if len(curve) == 1:
        return np.broadcast_to(curve[0], u.shape + curve.shape[1:]).copy()
    position = u * (len(curve) - 1)
    index = np.minimum(position.astype(np.int64), len(curve) - 2)   # u >= 0: truncation is floor
    frac = (position - index)[..., None]
    return curve[index] * (1.0 - frac) + curve[index + 1] * frac


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) head rotation in radians: yaw about the vertical axis, then pitch, then in-plane roll."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    turn = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    nod = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    tilt = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return tilt @ nod @ turn


def sample_pose(rng: np.random.Generator, curves: dict[str, np.ndarray], width: int, height: int,
                fill: tuple[float, float]) -> np.ndarray:
    """Random head pose and placement -> (2, 4) orthographic camera: image = P[:, :3] @ xyz + P[:, 3].

    Yaw N(0, 12 deg) clipped to +-28 (far side squashed, nose and chin shifted), pitch N(0, 6)
    clipped to +-15, roll N(0, 12) clipped to +-30. The face (jaw and brows) fills `fill` of the
    shorter image side and lies inside the image with a small margin.
    """
    yaw, pitch, roll = (np.deg2rad(min(max(rng.normal(0.0, sd), -limit), limit)) for sd, limit in POSE_DEGREES)
    linear = rotation_matrix(yaw, pitch, roll)[:2]
    outline = np.concatenate([curves["jaw"], curves["brow_l_up"], curves["brow_r_up"]]) @ linear.T
    low, high = outline.min(axis=0), outline.max(axis=0)
    scale = rng.uniform(*fill) * min(width, height) / float((high - low).max())
    half = (high - low) * scale / 2.0
    image_size = np.array([width, height], dtype=np.float64)
    margin = 0.02 * image_size
    centre = rng.uniform(half + margin, np.maximum(image_size - half - margin, half + margin))
    shift = centre - scale * (low + high) / 2.0
    return np.concatenate([scale * linear, shift[:, None]], axis=1)


def project(points: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """(N, 3) canonical points through a (2, 4) camera -> (N, 2) image pixels."""
    return points @ camera[:, :3].T + camera[:, 3]
