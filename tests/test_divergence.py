"""A diverged network never passes as a result: real DROCC on small data, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from odbench.cli import main
from odbench.deep.training import DivergenceGuard, TrainingDiverged

QUICK = ["--param", "drocc.epochs=6", "--param", "drocc.only_ce_epochs=2", "--param", "drocc.ascent_num_steps=3"]


def _record(results: Path) -> dict:
    (path,) = (results / "jobs").glob("*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (["--param", "drocc.lr=1e8"], "loss exploded"),  # stored as ok with loss 1e18 before (issue 14 §3)
        (["--param", "drocc.lr=1e38"], "optimizer step overflowed float32"),  # was a RuntimeError traceback
        (["--param", "drocc.lr=1e8", "--param", "drocc.mu=0"], "logits saturated"),  # loss exactly 0: no explosion
    ],
    ids=["lr=1e8", "lr=1e38", "lr=1e8 CE only"],
)
def test_diverged_drocc_fails_with_its_reason(params: list[str], reason: str, tmp_path: Path, capsys) -> None:
    results = tmp_path / "r"
    argv = ["run", "--no-mlflow", "--methods", "drocc", "--datasets", "sine2d", "--results", str(results), *QUICK, *params]
    assert main(argv) == 1
    record = _record(results)
    assert record["status"] == "failed" and record["error"]["type"] == "TrainingDiverged"
    assert reason in record["error"]["message"] and "lower the learning rate" in record["error"]["message"]
    assert "1 failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (["--param", "drocc.lr=1e8"], "loss exploded"),
        (["--param", "drocc.lr=1e38"], "optimizer step overflowed float32"),  # the stacked step: all run alone
        (["--param", "drocc.lr=1e8", "--param", "drocc.mu=0"], "logits saturated"),
    ],
    ids=["lr=1e8", "lr=1e38", "lr=1e8 CE only"],
)
def test_a_diverged_member_of_a_seed_group_fails_as_its_solo_run(params: list[str], reason: str, tmp_path: Path) -> None:
    """Repetitions train as one group: each member keeps the solo run's guard (a finite, exploded loss included)."""
    results = tmp_path / "r"
    argv = ["run", "--no-mlflow", "--methods", "drocc", "--datasets", "sine2d", "--seeds", "2", "--results",
            str(results), *QUICK, *params]  # fmt: skip
    assert main(argv) == 1
    records = [json.loads(path.read_text()) for path in (results / "jobs").glob("*.json")]
    assert len(records) == 2
    for record in records:
        assert record["status"] == "failed" and record["error"]["type"] == "TrainingDiverged"
        assert reason in record["error"]["message"] and "lower the learning rate" in record["error"]["message"]
        assert record["group_size"] == 1  # the verdict is its solo run's, run again alone


def test_healthy_drocc_with_its_defaults_is_not_flagged(tmp_path: Path) -> None:
    """The default schedule's adversarial phase starts at 9x the CE loss (measured): far below the limit."""
    results = tmp_path / "r"
    assert main(["run", "--no-mlflow", "--methods", "drocc", "--datasets", "sine2d", "--results", str(results)]) == 0
    assert _record(results)["status"] == "ok"


def test_guard_thresholds() -> None:
    growing = DivergenceGuard(lr=1.0)
    for loss in (0.7, 0.0, 0.0, 5000.0):  # a loss may drop to 0 and grow (DROCC's adversarial phase), below 1e4x
        growing.batch(loss, 0, 0)
    exploding = DivergenceGuard(lr=1.0)
    exploding.batch(0.7, 0, 0)
    with pytest.raises(TrainingDiverged, match="exploded"):
        exploding.batch(0.7 * 1e4 * 1.01, 0, 1)
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        exploding.batch(float("nan"), 1, 1)
    exploding.saturation(np.r_[np.full(97, 500.0), np.ones(3)])  # 97% beyond the limit: not yet saturated
    with pytest.raises(TrainingDiverged, match="saturated"):
        exploding.saturation(np.r_[np.full(99, -500.0), np.ones(1)])


class _FirstFeature:
    """An objective whose score is the input's first feature, counting the points it scores."""

    scores_are_logits = True

    def __init__(self) -> None:
        self.scored = 0

    def score(self, model: object, xb: object) -> object:
        self.scored += len(xb)  # type: ignore[arg-type]
        return xb[:, 0]  # type: ignore[index]


@pytest.mark.parametrize(
    ("saturated", "healthy_first", "scored", "raises"),
    [(0, True, 10, False), (97, True, 10, False), (97, False, 100, False), (99, True, 100, True), (100, True, 100, True)],
)
def test_saturation_check_scores_only_what_decides_it(saturated: int, healthy_first: bool, scored: int, raises: bool) -> None:
    """The check stops at the first batch that settles it (batches of 10 of 100 points); the verdict is the full pass's."""
    import torch

    from odbench.api import DataInfo
    from odbench.deep.training import check_saturation

    healthy, beyond = np.ones(100 - saturated), np.full(saturated, 500.0)
    X = (np.r_[healthy, beyond] if healthy_first else np.r_[beyond, healthy]).astype(np.float32)[:, None]
    info, objective = DataInfo("toy", "tabular", (1,), 100), _FirstFeature()
    full = DivergenceGuard(lr=1.0)
    try:
        full.saturation(X[:, 0].astype(np.float64))
        full_raises = False
    except TrainingDiverged:
        full_raises = True
    assert full_raises == raises
    guard = DivergenceGuard(lr=1.0)
    if raises:
        with pytest.raises(TrainingDiverged, match="saturated"):
            check_saturation(guard, objective, torch.nn.Identity(), X, info, torch.device("cpu"), batch_size=10)  # type: ignore[arg-type]
    else:
        check_saturation(guard, objective, torch.nn.Identity(), X, info, torch.device("cpu"), batch_size=10)  # type: ignore[arg-type]
    assert objective.scored == scored
