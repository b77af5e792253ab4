"""The threshold sweep's CSV and plot (evaluate.py --TH a b ...)."""
from __future__ import annotations

import csv
import sys

import pytest

from evaluator.cli import _write_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _summary(jf: float, j: float, f: float, fps: float, reuse: float) -> dict:
    return {"fps": fps, "reuse_rate": reuse, "scores": {"J&F-Mean": jf, "J-Mean": j, "F-Mean": f}}


def _rows(path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_thresholds_write_two_rows_and_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rows = [(0.5, _summary(0.61, 0.6, 0.62, 30.0, 0.8)), (0.9, _summary(0.7, 0.69, 0.71, 20.5, 0.25))]
    _write_sweep(tmp_path / "sweep", rows)
    table = _rows(tmp_path / "sweep" / "sweep.csv")
    assert [r["TH"] for r in table] == ["0.5", "0.9"]
    assert table[1] == {"TH": "0.9", "J&F": "0.700", "J": "0.690", "F": "0.710", "fps": "20.500", "reuse_rate": "0.250"}
    png = tmp_path / "sweep" / "sweep.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "sweep plot:" in capsys.readouterr().out


def test_without_matplotlib_the_csv_is_written_and_the_message_says_how(tmp_path, monkeypatch, capsys):
    # A None entry in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.delitem(sys.modules, "evaluator.sweep_plot", raising=False)
    _write_sweep(tmp_path, [(0.5, _summary(0.6, 0.6, 0.6, 10.0, 0.5)), (1.0, _summary(0.7, 0.7, 0.7, 5.0, 0.0))])
    assert len(_rows(tmp_path / "sweep.csv")) == 2
    assert not (tmp_path / "sweep.png").exists()
    assert "pip install -e .[plot]" in capsys.readouterr().out


def test_plot_of_an_unscored_sweep_shows_speed_and_reuse_against_th(tmp_path):
    pytest.importorskip("matplotlib")
    from evaluator.sweep_plot import plot_sweep, read_sweep_csv

    csv_path = tmp_path / "sweep.csv"
    csv_path.write_text("TH,J&F,J,F,fps,reuse_rate\n0.7,,,,12.000,0.400\n1,,,,8.000,0.000\n")
    cols = read_sweep_csv(csv_path)
    assert cols["fps"] == [12.0, 8.0] and all(v != v for v in cols["J&F"])  # NaN for empty cells
    png = plot_sweep(csv_path, tmp_path / "out" / "sweep.png")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_a_file_that_is_not_a_sweep_csv_is_refused_by_name(tmp_path):
    pytest.importorskip("matplotlib")
    from evaluator.sweep_plot import read_sweep_csv

    bad = tmp_path / "gate_log.csv"
    bad.write_text("sequence,frame,object,p_reuse,decision\nbike,1,1,0.9,reuse\n")
    with pytest.raises(ValueError, match=r"gate_log\.csv.*not a sweep CSV"):
        read_sweep_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("TH,J&F,J,F,fps,reuse_rate\n")
    with pytest.raises(ValueError, match="no rows"):
        read_sweep_csv(empty)
