"""`facemark ablate`: the paper's table of MobileNetV3-Large training variants, ours beside theirs.

Every config (configs/ablation/*.yaml) is trained in OUT/runs/<config name>/ and evaluated on the
split (reusing finished runs, see experiments.py). The table goes to stdout and OUT/ablation.md,
the numbers to OUT/ablation.json, and all variants' CED curves to OUT/ablation_ced.png.

A config is matched to the paper's row by its file name (first rule in PAPER_ROWS whose keyword
occurs in the name, most specific first); a name matching no rule is shown without a paper value.
"""

from __future__ import annotations

import json
from pathlib import Path

from facemark.io import atomic_write_text
from facemark.train.experiments import Budget, Experiment, markdown_table, prepare_experiments, run_all

# (row label, keywords in the config file name, LaPa test inter-pupil NME from the paper)
PAPER_ROWS: list[tuple[str, tuple[str, ...], float]] = [
    ("+ no box shift", ("shift",), 0.0931),
    ("no rotation / colour augmentation", ("aug", "rot", "colo"), 0.0823),
    ("detector-only boxes", ("detector", "det_only", "detonly"), 0.0884),
    ("no ImageNet pretraining", ("pretrain", "scratch"), 0.0881),
    ("frozen first 3 of 16 blocks", ("frozen", "freeze"), 0.0817),
    ("no warm-up", ("warm",), 0.0807),
    ("Wing loss", ("wing",), 0.0536),
    ("baseline (MSE)", ("baseline", "mse"), 0.0788),
]
PAPER_BASELINE = 0.0788
REMINDER = ("The paper's numbers are on the LaPa test set (106 points, inter-pupil NME, full training); "
            "compare directions and relative changes, not absolute values, when the data, the budget or "
            "the point scheme differ.")


def paper_row(name: str) -> tuple[str, float] | None:
    """(label, paper NME) of the row a config file name stands for, or None."""
    lowered = name.lower()
    for label, keywords, value in PAPER_ROWS:
        if any(word in lowered for word in keywords):
            return label, value
    return None


def _run_all(experiments: list[Experiment], data_root: Path, split: str) -> list[dict]:
    rows = []
    for experiment, row, result in run_all(experiments, data_root, split):
        row["paper"] = paper_row(experiment.name)
        if result is not None:
            row.update(nme_pupil=result["metrics"]["nme_pupil"], fr=result["metrics"]["fr@0.1"],
                       faces=result["metrics"]["count"], per_face=result["per_face"]["nme_pupil"])
        rows.append(row)
    return rows


def _baseline_nme(rows: list[dict]) -> float | None:
    for row in rows:
        if row["paper"] and row["paper"][1] == PAPER_BASELINE and row.get("nme_pupil") is not None:
            return row["nme_pupil"]
    return None


def _relative(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "-"
    return f"{100.0 * (value - base) / base:+.1f} %"


def format_table(rows: list[dict], budget: Budget, data_root: Path, split: str) -> str:
    """Markdown: our NME and change vs our baseline beside the paper's, plus budget and reminder."""
    base = _baseline_nme(rows)
    table = markdown_table(
        ["#", "config", "paper row", "NME (ours)", "vs baseline", "FR@0.1", "paper NME (LaPa)",
         "paper vs baseline"],
        [[str(i + 1), r["name"], r["paper"][0] if r["paper"] else "(no paper row)",
          f"{r['nme_pupil']:.4f}" if "nme_pupil" in r else f"failed: {r.get('error', '')}",
          _relative(r.get("nme_pupil"), base), f"{r['fr']:.4f}" if "fr" in r else "-",
          f"{r['paper'][1]:.4f}" if r["paper"] else "-",
          _relative(r["paper"][1], PAPER_BASELINE) if r["paper"] else "-"] for i, r in enumerate(rows)])
    return "\n".join([f"# facemark ablate: {data_root} ({split} split)", "",
                      f"**{budget.describe()}**", "", table, "", REMINDER]) + "\n"


def run_ablation(configs: list[Path], data_root: Path, out_dir: Path, budget: Budget, overrides: list[str],
                 split: str = "test") -> int:
    """Train and evaluate every variant, print and write the table -> exit code (0: no row failed)."""
    from facemark.plots import plot_ced

    out_dir = Path(out_dir)
    experiments = prepare_experiments(configs, overrides, budget, out_dir, Path(data_root))
    rows = _run_all(experiments, Path(data_root), split)
    report = format_table(rows, budget, Path(data_root), split)
    atomic_write_text(out_dir / "ablation.md", report)
    saved = {"data_root": str(data_root), "split": split, "budget": budget.to_dict(), "reminder": REMINDER,
             "paper_baseline": PAPER_BASELINE,
             "rows": [{k: (list(v) if k == "paper" and v else v) for k, v in r.items() if k != "per_face"}
                      for r in rows]}
    atomic_write_text(out_dir / "ablation.json", json.dumps(saved, indent=2) + "\n")
    curves = {r["name"]: r["per_face"] for r in rows if "per_face" in r}
    if curves:
        plot_ced(curves, 0.1, out_dir / "ablation_ced.png", title="Ablation CED")
    print(report)
    print(f"wrote {out_dir / 'ablation.md'}, ablation.json" + (", ablation_ced.png" if curves else ""))
    return 1 if any(r["status"] == "failed" for r in rows) else 0
