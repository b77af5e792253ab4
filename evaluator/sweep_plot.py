"""The threshold-sweep plot: accuracy against speed and against reuse rate, one point per TH.

matplotlib is an optional extra (`pip install -e .[plot]`): it is imported at module top so
that a missing install raises ImportError when this module is imported, which the caller
reports. Drawing goes through the Agg canvas directly, so no GUI backend is ever touched.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.atomic import atomic_write

SWEEP_COLUMNS = ("TH", "J&F", "J", "F", "fps", "reuse_rate")


def read_sweep_csv(csv_path: Path) -> dict[str, list[float]]:
    """Columns of a sweep.csv as floats (an empty cell, e.g. J&F of an unscored set, becomes NaN)."""
    csv_path = Path(csv_path)
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in SWEEP_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: not a sweep CSV, columns {missing} are missing "
                             f"(expected {', '.join(SWEEP_COLUMNS)})")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{csv_path}: the sweep CSV has no rows")
    return {c: [float(r[c]) if r[c] else math.nan for r in rows] for c in SWEEP_COLUMNS}


def plot_sweep(csv_path: Path, png_path: Path) -> Path:
    """Draw J&F against fps and against reuse rate, each point labelled with its TH; write png_path atomically.

    A sweep without J&F (a set with no public ground truth) shows fps and reuse rate against TH instead.
    Returns png_path.
    """
    cols = read_sweep_csv(csv_path)
    fig = Figure(figsize=(10, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    if all(math.isnan(v) for v in cols["J&F"]):
        _panel(left, cols["TH"], cols["fps"], cols["TH"], "TH", "frames per second")
        _panel(right, cols["TH"], cols["reuse_rate"], cols["TH"], "TH", "reuse rate")
        fig.suptitle("Threshold sweep (no ground truth: not scored)")
    else:
        _panel(left, cols["fps"], cols["J&F"], cols["TH"], "frames per second", "J&F")
        _panel(right, cols["reuse_rate"], cols["J&F"], cols["TH"], "reuse rate", "J&F")
        fig.suptitle("Threshold sweep: an object reuses iff p_reuse > TH")
    fig.tight_layout()
    png_path = Path(png_path)
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    return png_path


def _panel(ax, x: list[float], y: list[float], th: list[float], xlabel: str, ylabel: str) -> None:
    order = sorted(range(len(th)), key=lambda i: th[i])  # connect the points in threshold order
    ax.plot([x[i] for i in order], [y[i] for i in order], "-o", color="tab:blue")
    for xi, yi, t in zip(x, y, th):
        ax.annotate(f"TH {t:g}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
