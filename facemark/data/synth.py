"""`facemark synth`: a synthetic LaPa-layout dataset of drawn faces with simulated detector boxes.

Writes `OUT/<split>/images/synth_NNNNNN.jpg`, `OUT/<split>/landmarks/synth_NNNNNN.txt` (image
pixels, the scheme's index order) and `OUT/<split>/boxes/synth/synth_NNNNNN.txt`, then `OUT/synth.json`
with the generation parameters. Each face comes from its own seed (seed, split, index), so the
output does not depend on `workers`, and one face's image does not depend on the scheme either:
the schemes only sample different points of the same parametric face (facemark.data.synth_face).

Simulated detector (detector name `synth`), because real detectors do not fire on drawn faces.
From the tight landmark box (x0, y0, x1, y1) of size (w, h), biased the way MTCNN-style boxes are:
- median box: top edge 10 % of h below the top of the brows, bottom edge 5 % of h below the chin,
  width 1.13 w centred on the landmarks (boxes are a little wider and ~5 % larger than the face);
- per-face noise: centre shifted by N(0, 3 %) of the box size on each axis, width and height
  scaled by exp(N(0, 4 %)) each; score uniform in [0.9, 1];
- 1.5 % of faces are written as misses, so the miss path is exercised.

Interrupted runs: every split is written into a hidden folder and renamed when complete; a marker
`OUT/.synth-incomplete.json` exists from the start until `synth.json` is written last. A folder with
the marker and no synth.json is our own unfinished run and is regenerated; a non-empty folder with
neither is someone else's data and is refused.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facemark.codec import landmark_box
from facemark.data.boxes import MISS
from facemark.data.layout import SPLITS, write_landmarks
from facemark.data.synth_draw import draw_face, finish, sample_palette, scene_shapes
from facemark.data.synth_face import face_curves, project, sample_curve, sample_params, sample_pose
from facemark.data.synth_schemes import SCHEME_TABLES, scheme_groups, scheme_table
from facemark.errors import ConfigError, DataError
from facemark.io import atomic_path, atomic_write_text
from facemark.schemes import load_scheme

SYNTH_VERSION = 1          # bump when the generator's output changes: old folders stop matching
DETECTOR = "synth"
MANIFEST = "synth.json"
MARKER = ".synth-incomplete.json"
SPLIT_IDS = {split: i for i, split in enumerate(SPLITS)}
IMAGE_SIDE = (256, 512)    # LaPa-like image sizes (pixels, both sides)
ASPECT = (0.8, 1.25)       # height / width
FACE_FILL = (0.4, 0.7)     # landmark box side / shorter image side
BOX_TOP, BOX_BOTTOM, BOX_WIDTH = 0.10, 0.05, 1.13   # detector bias, fractions of the landmark box
BOX_SHIFT, BOX_SCALE = 0.03, 0.04                  # per-face noise (sd), fractions of the box size
MISS_RATE = 0.015
CHUNK = 32                 # faces per multiprocessing task
PROGRESS_MIN_FACES = 200   # no progress bar for the tiny datasets of tests


@dataclass(frozen=True)
class SynthFace:
    """One rendered face: JPEG bytes, (P, 2) float64 image-pixel landmarks, detector box or None."""

    jpeg: bytes
    points: np.ndarray
    box: np.ndarray | None
    score: float


def face_stem(index: int) -> str:
    return f"synth_{index:06d}"


def _face_rngs(seed: int, split: str, index: int) -> list[np.random.Generator]:
    """Independent streams for shape, pose, drawing and box, so changing one leaves the others."""
    children = np.random.SeedSequence([seed, SPLIT_IDS[split], index]).spawn(4)
    return [np.random.default_rng(child) for child in children]


def render_face(seed: int, split: str, index: int, scheme: str) -> SynthFace:
    """Draw face `index` of `split`; the picture depends on (seed, split, index) only."""
    shape_rng, pose_rng, draw_rng, box_rng = _face_rngs(seed, split, index)
    params = sample_params(shape_rng)
    curves = face_curves(params)
    width = int(pose_rng.integers(IMAGE_SIDE[0], IMAGE_SIDE[1] + 1))
    height = int(np.clip(round(width * pose_rng.uniform(*ASPECT)), *IMAGE_SIDE))
    camera = sample_pose(pose_rng, curves, width, height, FACE_FILL)
    canonical = {**curves, **scene_shapes(params, draw_rng)}
    shapes = {name: project(points, camera) for name, points in canonical.items()}
    unit = float(np.linalg.norm(camera[:, :3], axis=1).mean())   # pixels per canonical unit
    palette = sample_palette(draw_rng)
    image = draw_face(shapes, palette, width, height, unit, draw_rng)
    outline = np.concatenate([shapes["jaw"], shapes["brow_l_up"], shapes["brow_r_up"]])
    jpeg = finish(image, landmark_box(outline), palette, draw_rng)
    points = np.empty((len(scheme_table(scheme)), 2))
    for curve, indices, us in scheme_groups(scheme):
        points[indices] = sample_curve(shapes[curve], us)
    box, score = simulate_detector_box(points, box_rng)
    return SynthFace(jpeg, points, box, score)


def simulate_detector_box(points: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray | None, float]:
    """(P, 2) image-pixel landmarks -> ((4,) box x0 y0 x1 y1 or None for a miss, score); the
    bias and noise model is in the module docstring."""
    x0, y0, x1, y1 = landmark_box(points)
    w, h = x1 - x0, y1 - y0
    miss = rng.uniform() < MISS_RATE
    noise = rng.normal(0.0, 1.0, 4)
    score = float(rng.uniform(0.9, 1.0))
    if miss:
        return None, 0.0
    top, bottom = y0 + BOX_TOP * h, y1 + BOX_BOTTOM * h
    size = np.array([BOX_WIDTH * w, bottom - top]) * np.exp(BOX_SCALE * noise[2:])
    centre = np.array([(x0 + x1) / 2.0, (top + bottom) / 2.0]) + BOX_SHIFT * noise[:2] * size
    return np.concatenate([centre - size / 2.0, centre + size / 2.0]), score


def _write_faces(job: tuple[str, str, str, int, int, int]) -> int:
    """Worker: write faces [start, stop) of a split into `folder`; returns how many."""
    scheme, folder, split, seed, start, stop = job
    root = Path(folder)
    for index in range(start, stop):
        face = render_face(seed, split, index, scheme)
        stem = face_stem(index)
        (root / "images" / f"{stem}.jpg").write_bytes(face.jpeg)
        write_landmarks(root / "landmarks" / f"{stem}.txt", face.points)
        (root / "boxes" / DETECTOR / f"{stem}.txt").write_text(box_entry(face.box, face.score))
    return stop - start


def box_entry(box: np.ndarray | None, score: float) -> str:
    """The box cache line exactly as facemark.data.boxes.write_box writes it (a test holds them
    equal). write_box fsyncs each entry, right for `facemark boxes` that resumes image by image
    but 10x slower here, where the whole split folder is renamed into place at once."""
    if box is None:
        return f"{MISS}\n"
    x0, y0, x1, y1 = (float(v) for v in box)
    return f"{x0:.2f} {y0:.2f} {x1:.2f} {y1:.2f} {score:.4f}\n"


def _check_arguments(scheme: str, counts: dict[str, int], seed: int) -> None:
    load_scheme(scheme)   # ConfigError naming the shipped schemes
    if scheme not in SCHEME_TABLES:
        raise ConfigError(f"scheme {scheme!r} has no synthetic face sampling; supported: "
                          f"{', '.join(sorted(SCHEME_TABLES))}")
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise ConfigError(f"unknown split {unknown[0]!r} in counts; valid: {', '.join(SPLITS)}")
    bad = {split: n for split, n in counts.items() if not isinstance(n, int) or n < 0}
    if bad or not any(counts.values()):
        raise ConfigError(f"face counts must be non-negative integers, not all zero; got {counts}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def _folder_state(out: Path, params: dict) -> str:
    """'done' (same parameters already complete), 'fresh' (absent or empty) or 'resume' (our own
    interrupted run); anything else is refused with a DataError naming the folder."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return "fresh"
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            existing = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{manifest}: unreadable synth manifest ({exc.__class__.__name__}); "
                            f"delete {out} to regenerate") from None
        if existing == params:
            return "done"
        differing = sorted(k for k in set(existing) | set(params) if existing.get(k) != params.get(k))
        raise DataError(f"{out}: holds a synthetic dataset made with other parameters "
                        f"({', '.join(differing)} differ; see {manifest}); delete it or choose another --out")
    if (out / MARKER).is_file():
        return "resume"
    raise DataError(f"{out}: folder is not empty and is not a facemark synthetic dataset (no {MANIFEST}); "
                    f"refusing to write into it, choose another --out")


def _remove_leftovers(out: Path) -> None:
    """Delete what an interrupted run of ours left: split folders and hidden partial folders."""
    for split in SPLITS:
        if (out / split).is_dir():
            shutil.rmtree(out / split)
        for partial in out.glob(f".{split}.*.partial"):
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink()


def _jobs(scheme: str, folder: Path, split: str, seed: int, count: int) -> list[tuple]:
    return [(scheme, str(folder), split, seed, start, min(start + CHUNK, count))
            for start in range(0, count, CHUNK)]


def generate_dataset(out: Path, scheme: str, counts: dict[str, int], seed: int, workers: int = 1) -> None:
    """Write a synthetic LaPa-layout dataset of `counts[split]` faces per split into `out`.

    Deterministic in (scheme, counts, seed); `workers` > 1 renders in that many processes with
    byte-identical output. An existing complete dataset with the same parameters is left as is;
    see the module docstring for refusals and interrupted runs.
    """
    out = Path(out)
    _check_arguments(scheme, counts, seed)
    params = {"generator": "facemark.data.synth", "version": SYNTH_VERSION, "scheme": scheme,
              "counts": {split: int(counts.get(split, 0)) for split in SPLITS}, "seed": seed,
              "detector": DETECTOR}
    state = _folder_state(out, params)
    if state == "done":
        print(f"{out}: already holds this synthetic dataset ({MANIFEST} matches); nothing to do")
        return
    if state == "resume":
        print(f"{out}: an earlier run was interrupted; regenerating")
        _remove_leftovers(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, json.dumps(params, indent=2) + "\n")
    total, started = sum(params["counts"].values()), time.perf_counter()
    # the workers leave Ctrl-C to this process, which stops them on any error or interruption
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_ignore_sigint) if workers > 1 else None
    try:
        with tqdm(total=total, desc=f"synth {scheme}", unit="face", disable=total < PROGRESS_MIN_FACES) as bar:
            for split, count in params["counts"].items():
                if count:
                    _write_split(out / split, scheme, split, seed, count, pool, bar)
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    atomic_write_text(out / MANIFEST, json.dumps(params, indent=2) + "\n")
    (out / MARKER).unlink()
    seconds = time.perf_counter() - started
    split_text = "/".join(str(params["counts"][s]) for s in SPLITS)
    print(f"wrote {total} synthetic {scheme} faces (train/val/test {split_text}) to {out} in "
          f"{seconds:.1f} s ({total / seconds:.0f} faces/s, {workers} worker{'s' * (workers > 1)})")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_split(final: Path, scheme: str, split: str, seed: int, count: int, pool, bar: tqdm) -> None:
    """Render one split into a hidden folder renamed to `final` only when every face is written."""
    with atomic_path(final) as folder:
        for sub in ("images", "landmarks", f"boxes/{DETECTOR}"):
            (folder / sub).mkdir(parents=True)
        jobs = _jobs(scheme, folder, split, seed, count)
        results = pool.imap_unordered(_write_faces, jobs) if pool is not None else map(_write_faces, jobs)
        for written in results:
            bar.update(written)
