"""The shared deep-training loop: selection, NaN guard, determinism, batching."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from odbench.api import FitContext
from odbench.deep import nets
from odbench.deep.training import Batches, Objective, TrainConfig, TrainingDiverged, score_array, train
from odbench.devkit.testing import obvious_outlier_task


class LogitObjective(Objective):
    """A plain classifier: normal -> logit high; score = -logit."""

    def loss(self, model, x, y, step):
        return F.binary_cross_entropy_with_logits(model(x).squeeze(1), (y == 0).float())

    def score(self, model, x):
        return -model(x).squeeze(1)


def _fit(seed: int = 0, **config):
    task = obvious_outlier_task("tabular")
    torch.manual_seed(seed)
    model = nets.build("mlp", task.info.shape, hidden=16)
    history = []
    ctx = FitContext(seed=seed, on_epoch=lambda e, m: history.append(m))
    result = train(model, LogitObjective(), task.train.X, task.train.y, task, ctx, TrainConfig(**config))
    return task, model, result, history


def test_selects_epoch_by_validation_metric() -> None:
    _, _, result, history = _fit(epochs=4, batch_size=32, lr=1e-2)
    assert result.selected_by == "val"
    values = [h["val_auroc"] for h in history]
    assert values[result.best_epoch] == max(values)
    assert len(history) == 4 and all("loss" in h for h in history)


def test_no_labelled_validation_keeps_last_epoch() -> None:
    task = obvious_outlier_task("tabular")
    task = replace(task, val=replace(task.val, y=None))
    torch.manual_seed(0)
    model = nets.build("mlp", task.info.shape, hidden=8)
    result = train(model, LogitObjective(), task.train.X, task.train.y, task, FitContext(seed=0), TrainConfig(epochs=2))
    assert result.selected_by == "last" and result.best_epoch == 1


class DivergesAtEpoch1(LogitObjective):
    def loss(self, model, x, y, step):
        return super().loss(model, x, y, step) * (float("nan") if step.epoch == 1 else 1.0)


def test_nan_loss_stops_with_reason() -> None:
    task = obvious_outlier_task("tabular")
    model = nets.build("mlp", task.info.shape, hidden=8)
    with pytest.raises(TrainingDiverged, match="epoch 1, batch 0"):
        train(model, DivergesAtEpoch1(), task.train.X, task.train.y, task, FitContext(seed=0), TrainConfig(epochs=3))


def test_same_seed_same_scores() -> None:
    task, m1, _, _ = _fit(seed=3, epochs=2)
    _, m2, _, _ = _fit(seed=3, epochs=2)
    obj, dev = LogitObjective(), torch.device("cpu")
    np.testing.assert_array_equal(score_array(obj, m1, task.test.X, task.info, dev), score_array(obj, m2, task.test.X, task.info, dev))


def test_uint8_images_are_scaled_per_batch() -> None:
    task = obvious_outlier_task("image")
    info = replace(task.info, channel_mean=(0.5,), channel_std=(0.25,))
    X = np.full((3, 1, 4, 4), 255, np.uint8)
    data = Batches(X, None, info, torch.device("cpu"))
    assert data.X.dtype == torch.uint8  # compact in memory
    (xb, _), = list(data.iterate(8))
    assert torch.allclose(xb, torch.full_like(xb, 2.0))  # (1 - 0.5) / 0.25


def test_a_last_training_batch_of_one_is_folded_in() -> None:
    """BatchNorm cannot train on one example: 257 points in batches of 256 give one batch."""
    task = obvious_outlier_task("image")
    data = Batches(np.zeros((257, 1, 4, 4), np.float32), None, task.info, torch.device("cpu"))
    sizes = [len(x) for x, _ in data.iterate(256, torch.Generator().manual_seed(0))]
    assert sizes == [257]
    assert [len(x) for x, _ in data.iterate(256)] == [256, 1]  # scoring keeps every point, batch-invariant anyway


def test_sgd_momentum_is_a_parameter_that_reaches_the_optimizer() -> None:
    # the EdgeML scripts' --mom defaults differ (0.0 for CIFAR, 0.99 elsewhere): it must not be fixed
    assert TrainConfig.from_params({"optimizer": "sgd", "momentum": 0.99}).momentum == 0.99
    obj, dev = LogitObjective(), torch.device("cpu")
    scores = []
    for momentum in (0.0, 0.99):
        task, model, _, _ = _fit(epochs=2, batch_size=32, lr=1e-2, optimizer="sgd", momentum=momentum)
        scores.append(score_array(obj, model, task.test.X, task.info, dev))
    assert not np.allclose(scores[0], scores[1])


class LearnsThenUnlearns(LogitObjective):
    """Learns normal-vs-negative for one epoch, then the reverse: the validation metric peaks early."""

    def loss(self, model, x, y, step):
        target = (y == 0) if step.epoch == 0 else (y == 1)
        return F.binary_cross_entropy_with_logits(model(x).squeeze(1), target.float())


def test_the_selected_epochs_weights_are_the_ones_left_in_the_model() -> None:
    task = obvious_outlier_task("tabular")
    torch.manual_seed(0)
    model = nets.build("mlp", task.info.shape, hidden=16)
    history: list[dict] = []
    ctx = FitContext(seed=0, on_epoch=lambda e, m: history.append(m))
    config = TrainConfig(epochs=4, batch_size=32, lr=1e-2)
    result = train(model, LearnsThenUnlearns(), task.train.X, task.train.y, task, ctx, config)
    values = [h["val_auroc"] for h in history]
    assert result.best_epoch == 0 and values[0] > values[-1] + 0.2  # the last epoch is not the one selected
    # the model scores validation as it did at the selected epoch, not as at the last
    from odbench.core.metrics import evaluate

    now = evaluate(("auroc",), task.val.y, score_array(LearnsThenUnlearns(), model, task.val.X, task.info, torch.device("cpu")))
    assert now["auroc"] == pytest.approx(values[0], abs=1e-9)
