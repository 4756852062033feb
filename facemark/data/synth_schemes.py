"""Where each scheme's landmarks sit on the synthetic face: a table of (curve, u) per index.

Curve names and the direction of u are defined in facemark.data.synth_face. The index order is
each dataset's own (LaPa/JD 106, iBUG 300-W 68, WFLW 98, Datatang 106; regions and flip pairs in
facemark/schemes/*.yaml); the u of points that are not at simple fractions (Datatang's eyes, nose
wings and mouth) are rounded median positions of real Datatang faces along the same curves.
`mirror_entry` lets a test check each table against its scheme's flip permutation.
"""

from __future__ import annotations

import functools

import numpy as np

Entry = tuple[str, float]


def _run(curve: str, *us: float) -> list[Entry]:
    return [(curve, float(u)) for u in us]


def _even(count: int) -> list[float]:
    return [i / (count - 1) for i in range(count)]


def _jaw(count: int) -> list[Entry]:
    return _run("jaw", *_even(count))


def _brows_106() -> list[Entry]:
    """LaPa / WFLW 33-50: left tip, upper edge outwards-in, lower edge inner-out; right mirrored."""
    return (_run("brow_l_up", 0, .25, .5, .75, 1) + _run("brow_l_lo", 1, .75, .5, .25)
            + _run("brow_r_up", 1, .75, .5, .25, 0) + _run("brow_r_lo", .25, .5, .75, 1))


def _eyes_8(with_centre: bool) -> list[Entry]:
    """Outer corner, 3 upper-lid points, inner corner, 3 lower-lid points (LaPa 66-83, WFLW 60-75)."""
    left = _run("eye_l_up", 0, .25, .5, .75, 1) + _run("eye_l_lo", .75, .5, .25)
    right = _run("eye_r_up", 1, .75, .5, .25, 0) + _run("eye_r_lo", .25, .5, .75)
    if with_centre:
        left, right = left + _run("eye_l_c", 0), right + _run("eye_r_c", 0)
    return left + right


def _mouth_20() -> list[Entry]:
    """Outer lip from the left corner clockwise (12), inner lip likewise (8): LaPa, iBUG, WFLW."""
    return (_run("lip_ou", *_even(7)) + _run("lip_ol", 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6)
            + _run("lip_iu", 0, .25, .5, .75, 1) + _run("lip_il", .75, .5, .25))


def _nose_bottom_5() -> list[Entry]:
    """iBUG 31-35 / WFLW 55-59: alar base, nostril, subnasale, nostril, alar base."""
    return _run("nose_l", .6, .8) + _run("subnasale", 0) + _run("nose_r", .8, .6)


def _lapa106() -> list[Entry]:
    nose = (_run("bridge", *_even(4)) + _run("nose_l", 0, .2, .4, .6, .8) + _run("subnasale", 0)
            + _run("nose_r", .8, .6, .4, .2, 0))
    return (_jaw(33) + _brows_106() + nose + _eyes_8(with_centre=True) + _mouth_20()
            + _run("eye_l_c", 0) + _run("eye_r_c", 0))


def _ibug68() -> list[Entry]:
    brows = _run("brow_l_up", *_even(5)) + _run("brow_r_up", 1, .75, .5, .25, 0)
    eyes = (_run("eye_l_up", 0, 1 / 3, 2 / 3, 1) + _run("eye_l_lo", 2 / 3, 1 / 3)
            + _run("eye_r_up", 1, 2 / 3, 1 / 3, 0) + _run("eye_r_lo", 1 / 3, 2 / 3))
    return _jaw(17) + brows + _run("bridge", *_even(4)) + _nose_bottom_5() + eyes + _mouth_20()


def _wflw98() -> list[Entry]:
    return (_jaw(33) + _brows_106() + _run("bridge", *_even(4)) + _nose_bottom_5()
            + _eyes_8(with_centre=False) + _mouth_20() + _run("eye_l_c", 0) + _run("eye_r_c", 0))


def _datatang_eye(side: str) -> list[Entry]:
    """Datatang 51-60 (left) in index order: corners, lids, lid apexes, highlight, pupil."""
    up, lo = f"eye_{side}_up", f"eye_{side}_lo"
    if side == "l":
        order = [(up, 0), (up, .33), (up, .74), (up, 1), (lo, .66), (lo, .29), (up, .53), (lo, .47)]
    else:
        order = [(up, 1), (up, .74), (up, .33), (up, 0), (lo, .29), (lo, .66), (up, .53), (lo, .47)]
    return [(c, float(u)) for c, u in order] + _run(f"eye_{side}_hl", 0) + _run(f"eye_{side}_c", 0)


def _datatang106() -> list[Entry]:
    brows = (_run("brow_l_up", *_even(5)) + _run("brow_l_lo", .25, .5, .75, 1)
             + _run("brow_r_up", 1, .75, .5, .25, 0) + _run("brow_r_lo", 1, .75, .5, .25))
    nose = (_run("bridge", *_even(4)) + [("nose_l", 0.0), ("nose_r", 0.0), ("nose_l", .3), ("nose_r", .3),
                                         ("nose_l", .42), ("nose_r", .42)]
            + _run("nose_l", .6, .8) + _run("subnasale", 0) + _run("nose_r", .8, .6))
    mouth = ([("lip_ou", 0.0), ("lip_ou", .375), ("lip_ou", .5), ("lip_ou", .625), ("lip_ou", 1.0),
              ("lip_ol", .5), ("lip_ou", .18), ("lip_ou", .82), ("lip_ol", .8), ("lip_ol", .2),
              ("lip_iu", 0.0), ("lip_iu", 1.0)]
             + _run("lip_iu", .37, .5, .63) + _run("lip_il", .37, .5, .63) + _run("lip_ol", .38, .62))
    return _jaw(33) + brows + _datatang_eye("l") + _datatang_eye("r") + nose + mouth


SCHEME_TABLES: dict[str, list[Entry]] = {
    "lapa106": _lapa106(), "ibug68": _ibug68(), "wflw98": _wflw98(), "datatang106": _datatang106(),
}


def scheme_table(name: str) -> list[Entry]:
    """The (curve, u) table of a scheme; an unknown name raises ValueError listing the valid ones."""
    if name not in SCHEME_TABLES:
        raise ValueError(f"synthetic faces support the schemes {', '.join(sorted(SCHEME_TABLES))}; "
                         f"got {name!r}")
    return SCHEME_TABLES[name]


@functools.cache
def scheme_groups(name: str) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """The table grouped by curve: (curve, (K,) landmark indices, (K,) u) for vectorised sampling."""
    table = scheme_table(name)
    curves = dict.fromkeys(curve for curve, _ in table)
    return tuple((curve, np.array([i for i, (c, _) in enumerate(table) if c == curve]),
                  np.array([u for c, u in table if c == curve])) for curve in curves)


def mirror_entry(entry: Entry) -> Entry:
    """The (curve, u) of the mirror image point: left <-> right curves, or u <-> 1 - u on the
    curves that cross the midline (jaw, lips); bridge and subnasale are their own mirrors."""
    curve, u = entry
    if "_l_" in curve or curve.endswith("_l"):
        return curve.replace("_l", "_r", 1), u
    if "_r_" in curve or curve.endswith("_r"):
        return curve.replace("_r", "_l", 1), u
    if curve in ("bridge", "subnasale"):
        return curve, u
    return curve, round(1.0 - u, 9)
