"""Figure 1: the engine fits and scores (``odbench.engine.figure1``), the view only draws what it is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odbench.engine.figure1 import Figure1, Panel, measure
from odbench.engine.registry import Registry
from odbench.views.plots import figure1

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_figure_is_drawn_from_numbers_alone(tmp_path: Path) -> None:
    """A hand-made panel (no method, no data set) draws: the view needs only what was measured."""
    xs, ys = np.linspace(-1, 1, 8), np.linspace(-2, 2, 6)
    scores = np.add.outer(ys**2, xs**2)  # scores[i, j] at (xs[j], ys[i])
    one = Panel("made by hand", "a line", xs, ys, scores, accept=1.0, measured=2.0, points=np.zeros((3, 2)))
    lines = figure1(Figure1([one, one], seconds=0.0), tmp_path / "f.png")
    assert lines[:2] == ["a line", "a line"] and lines[2].startswith(f"wrote {tmp_path / 'f.png'}")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG


def test_measure_fits_and_scores_the_three_panels(registry: Registry, tmp_path: Path) -> None:
    """A short schedule: three panels, each grid scored in full, each threshold inside its scores' range."""
    short = {"epochs": 2, "only_ce_epochs": 1, "ascent_num_steps": 1}
    measured = measure(0, registry, overrides=short, grid=12)
    assert [p.summary.split(" on ")[0] for p in measured.panels] == ["(b) DROCC", "(c) DROCC", "(d) DROCC-LF"]
    for p in measured.panels:
        assert p.scores.shape == (12, 12) and np.all(np.isfinite(p.scores))
        assert p.points.shape[1] == 2 and len(p.points) > 0
        assert p.xs[0] < p.points[:, 0].min() and p.xs[-1] > p.points[:, 0].max()  # the training points lie inside
    assert measured.panels[0].measured is None and all(p.measured is not None for p in measured.panels[1:])
    assert "sigma" in measured.panels[2].summary  # DROCC-LF's learned coordinate weights are printed
    lines = figure1(measured, tmp_path / "figure1.png")
    assert len(lines) == 4 and (tmp_path / "figure1.png").read_bytes()[:8] == PNG
