"""Reproduce a shipped model's card: its test NME, measured again through `Landmarker` alone.

    python benchmarks/card_check.py data/300w --model ibug68          # every artifact of ibug68
    python benchmarks/card_check.py data/dt --model datatang106

ROOT is the model's test split in LaPa layout with its cached boxes (`facemark boxes ROOT --detector
mtcnn`, the boxes `facemark validate` read when the card was written). Each artifact of the card runs
through `Landmarker("NAME:ARTIFACT")` (the runtime a user gets, no torch) on every test face's cached
box; printed per artifact: the card's inter-pupil and outer-corner NME, the measured ones, and the
relative difference. The card's face-list sha256 is compared with ROOT's, so a different split shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facemark import Landmarker, pretrained
from facemark.data.boxes import read_split_boxes
from facemark.data.layout import list_split, load_sample
from facemark.config import section_from_saved
from facemark.data.fingerprint import fingerprint_samples
from facemark.metrics import nme


def measure(root: Path, name: str, artifact: str, detector: str) -> tuple[float, float, int]:
    """NAME:ARTIFACT on ROOT's test faces and cached boxes -> (IP NME, OC NME, faces)."""
    landmarker = Landmarker(f"{name}:{artifact}")
    samples = list_split(root, "test")
    boxes = read_split_boxes(root, "test", detector, [sample.stem for sample in samples])
    preds, truths = [], []
    for sample in samples:
        if boxes[sample.stem] is None:   # validate scores a miss on the landmark box; the card says 0 misses
            raise SystemExit(f"{sample.stem}: no cached {detector} box; the card's run had one for every face")
        image, points = load_sample(sample, landmarker.scheme.num_points)
        preds.append(landmarker.predict(image, boxes=boxes[sample.stem])[0].landmarks)
        truths.append(points)
    pred, truth = np.stack(preds), np.stack(truths)
    return (float(nme(pred, truth, landmarker.scheme, "pupil").mean()),
            float(nme(pred, truth, landmarker.scheme, "corner").mean()), len(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="dataset root in LaPa layout whose test split the card measured")
    parser.add_argument("--model", default="ibug68", help="a shipped model's name (facemark models)")
    args = parser.parse_args()
    card = pretrained.read_card(pretrained.ROOT / args.model)
    test = card["test"]
    recorded = card["data"]["splits"]["test"]["sha256"]
    data = section_from_saved("data", {"scheme": card["scheme"], "detector": test["detector"]}, [], "card_check",
                              str(pretrained.ROOT / args.model / pretrained.CARD_NAME))
    found = fingerprint_samples(args.root, "test", list_split(args.root, "test"), data)["sha256"]
    verdict = "the card's" if found == recorded else f"NOT the card's {recorded[:12]}"
    print(f"{args.model} on {args.root}/test: face-list sha256 {found[:12]} ({verdict})")
    print(f"{'artifact':<26} {'card IP':>8} {'IP':>8} {'card OC':>8} {'OC':>8} {'diff':>8}")
    for artifact, facts in card["artifacts"].items():
        pupil, corner, faces = measure(args.root, args.model, artifact, test["detector"])
        expected = facts["accuracy"]
        diff = pupil / expected["nme_pupil"] - 1
        print(f"{artifact:<26} {expected['nme_pupil']:>8.5f} {pupil:>8.5f} {expected['nme_corner']:>8.5f} "
              f"{corner:>8.5f} {diff:>+8.3%}  ({faces} faces)")


if __name__ == "__main__":
    main()
