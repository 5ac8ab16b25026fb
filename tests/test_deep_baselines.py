"""The deep baselines keep their papers' promises (beyond the generic contract).

DeepSVDD: a centre that is never zero, no bias anywhere, the soft-boundary
radius at the (1 - nu)-quantile.  DeepSAD and BCE: they really use the
limited negatives.  Autoencoders: decoders give back the input's shape.
Nearest neighbour: equals brute force, whatever the chunking.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from odbench.api import DataInfo, FitContext, Split, Task
from odbench.core.metrics import evaluate
from odbench.deep import nets
from odbench.deep.decoders import build_autoencoder
from odbench.deep.hypersphere import CENTRE_EPS, Hypersphere, guard_centre, init_centre
from odbench.deep.neighbours import chunk_sizes
from odbench.deep.training import Batches
from odbench.devkit.testing import obvious_outlier_task
from odbench.protocols.scaling import as_float

FAST = {"epochs": 5, "batch_size": 32, "lr": 1e-2, "rep_dim": 8}


def _method(registry, name: str, task: Task, **params):
    cls = registry.method(name)
    return cls(**{**cls.default_params(task.info), **params})


def _bias_parameters(model: nn.Module) -> list[str]:
    """Names of every bias parameter (Linear/Conv ``bias``, LSTM ``bias_ih_l0`` ...)."""
    return [name for name, _ in model.named_parameters() if "bias" in name.split(".")[-1]]


# --- DeepSVDD ---------------------------------------------------------------


def test_guard_pushes_small_coordinates_to_eps() -> None:
    c = torch.tensor([0.0, 1e-9, -1e-9, 0.05, -0.05, 0.3, -2.0])
    guarded = guard_centre(c)
    assert torch.all(guarded.abs() >= CENTRE_EPS)
    np.testing.assert_allclose(guarded.numpy(), [0.1, 0.1, -0.1, 0.1, -0.1, 0.3, -2.0])


def test_centre_is_never_zero_even_for_a_network_that_outputs_zeros() -> None:
    task = obvious_outlier_task("tabular")
    encoder = nets.build("mlp", task.info.shape, out_dim=8, bias=False)
    nn.init.zeros_(encoder.net[-1].weight)  # phi(x) = 0 for every x: the collapse DeepSVDD must avoid
    model = Hypersphere(encoder, 8)
    c = init_centre(model, Batches(task.train.X, task.train.y, task.info, torch.device("cpu")))
    assert torch.all(c.abs() >= CENTRE_EPS)


@pytest.mark.parametrize("modality", ["tabular", "image", "sequence"])
@pytest.mark.parametrize("name", ["deepsvdd", "deepsad"])
def test_hypersphere_networks_have_no_bias_and_a_nonzero_centre(registry, name: str, modality: str) -> None:
    task = obvious_outlier_task(modality)
    method = _method(registry, name, task, **{**FAST, "epochs": 1}).fit(task.for_fit(), FitContext(seed=0))
    assert _bias_parameters(method.model_) == []
    assert all(getattr(m, "bias", None) in (None, False) for m in method.model_.modules())
    assert torch.all(method.model_.c.abs() >= CENTRE_EPS)


def test_bias_check_would_catch_a_biased_backbone() -> None:
    # the check above can fail: the same backbones with bias=True are caught
    assert _bias_parameters(nets.build("mlp", (6,), out_dim=8, bias=True))
    assert _bias_parameters(nets.build("lstm", (12, 3), out_dim=8, bias=True))


def test_soft_boundary_radius_is_the_nu_quantile_of_training_distances(registry) -> None:
    task = obvious_outlier_task("tabular")
    nu = 0.2
    params = {**FAST, "objective": "soft-boundary", "nu": nu, "warm_up_epochs": 2}
    method = _method(registry, "deepsvdd", task, **params).fit(task.for_fit(), FitContext(seed=0))
    model = method.model_
    with torch.no_grad():
        dist = model.dist(torch.as_tensor(task.train.normal)).sqrt().numpy()
    radius = float(model.R)
    assert radius > 0
    assert radius == pytest.approx(np.quantile(dist, 1 - nu), rel=1e-5)
    outside = np.mean(method.anomaly_score(task.train.normal) > 0)  # score = dist^2 - R^2
    assert outside == pytest.approx(nu, abs=1.0 / len(dist) + 1e-9)


def test_pretraining_moves_the_encoder_and_reports_separately(registry) -> None:
    task = obvious_outlier_task("tabular")
    reports: list[dict[str, float]] = []
    ctx = FitContext(seed=0, on_epoch=lambda e, m: reports.append(m))
    plain = _method(registry, "deepsvdd", task, **{**FAST, "epochs": 1}).fit(task.for_fit(), FitContext(seed=0))
    pre = _method(registry, "deepsvdd", task, **{**FAST, "epochs": 1, "pretrain_epochs": 2}).fit(task.for_fit(), ctx)
    assert not torch.allclose(plain.model_.c, pre.model_.c)
    assert [("pretrain_loss" in r) for r in reports] == [True, True, False]


# --- DeepSAD and BCE use the negatives ----------------------------------------


def _near_anomaly_task(seed: int = 0, d: int = 6) -> Task:
    """Normals N(0, I); anomalies a tighter cluster just outside along axis 0.

    A one-class method has no reason to prefer that direction; labelled
    anomalies of the same kind show it.
    """
    rng = np.random.default_rng(seed)

    def split(n_normal: int, n_anomalous: int) -> Split:
        anomalies = 0.5 * rng.standard_normal((n_anomalous, d))
        anomalies[:, 0] += 2.0
        X = np.concatenate([rng.standard_normal((n_normal, d)), anomalies]).astype(np.float32)
        return Split(X=X, y=np.r_[np.zeros(n_normal, int), np.ones(n_anomalous, int)], index=np.arange(len(X)))

    train = split(160, 16)
    info = DataInfo("near_anomalies", "tabular", (d,), len(train), "mlp", has_negatives=True)
    return Task("near_anomalies", "synthetic", None, train, split(40, 40), split(100, 100), info, ("auroc",))


def _without_negatives(task: Task) -> Task:
    keep = task.train.y == 0
    train = Split(X=task.train.X[keep], y=task.train.y[keep], index=task.train.index[keep])
    return replace(task, train=train, info=replace(task.info, has_negatives=False))


OCLN = {**FAST, "epochs": 10}


def _auroc(method, task: Task) -> float:
    return evaluate(("auroc",), task.test.y, method.anomaly_score(task.test.X))["auroc"]


def test_deepsad_uses_the_negatives(registry) -> None:
    """With negatives DeepSAD finds the anomalies' direction; without, it is DeepSVDD."""
    task = _near_anomaly_task()
    with_neg = _method(registry, "deepsad", task, **OCLN).fit(task.for_fit(), FitContext(seed=0))
    alone = _without_negatives(task)
    without = _method(registry, "deepsad", alone, **OCLN).fit(alone.for_fit(), FitContext(seed=0))
    svdd = _method(registry, "deepsvdd", alone, **OCLN).fit(alone.for_fit(), FitContext(seed=0))
    # no negatives: the eta term vanishes and DeepSAD *is* one-class DeepSVDD, score for score
    np.testing.assert_allclose(without.anomaly_score(task.test.X), svdd.anomaly_score(task.test.X), rtol=1e-5)
    assert _auroc(with_neg, task) > 0.9
    assert _auroc(with_neg, task) > _auroc(without, task) + 0.15


def test_bce_uses_the_negatives_and_refuses_to_train_without(registry) -> None:
    task = _near_anomaly_task()
    plain = {k: v for k, v in OCLN.items() if k != "rep_dim"}  # bce has no embedding
    method = _method(registry, "bce", task, **plain).fit(task.for_fit(), FitContext(seed=0))
    assert _auroc(method, task) > 0.9
    alone = _without_negatives(task)
    with pytest.raises(ValueError, match="needs labelled negatives"):
        _method(registry, "bce", alone, **plain).fit(alone.for_fit(), FitContext(seed=0))


# --- autoencoders -------------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "shape", "rep_dim"),
    [
        ("mlp", (6,), 4),
        ("lenet_cifar", (3, 32, 32), 128),
        ("lenet_mnist", (1, 28, 28), 32),
        ("lenet_mnist", (1, 15, 15), 8),
        ("lstm", (12, 3), 8),
    ],
)
def test_autoencoders_reconstruct_the_input_shape(backbone: str, shape: tuple[int, ...], rep_dim: int) -> None:
    model = build_autoencoder(backbone, shape, rep_dim).eval()
    x = torch.randn(3, *shape)
    assert model(x).shape == x.shape
    assert model.encoder(x).shape == (3, rep_dim)


def test_cifar_decoder_reshapes_the_code_like_the_reference() -> None:
    # CIFAR10_LeNet_Autoencoder: code (128) -> (8, 4, 4) without a linear layer
    decoder = build_autoencoder("lenet_cifar", (3, 32, 32), 128).decoder
    assert decoder.project is None and decoder.map_shape == (8, 4, 4)


# --- nearest neighbour ----------------------------------------------------------


def _brute_force(train: np.ndarray, query: np.ndarray) -> np.ndarray:
    diff = query.reshape(len(query), 1, -1).astype(np.float64) - train.reshape(1, len(train), -1)
    return np.sqrt((diff**2).sum(-1)).min(axis=1)


@pytest.mark.parametrize("modality", ["tabular", "image"])
def test_nearest_neighbour_equals_brute_force_for_any_chunking(registry, modality: str) -> None:
    task = obvious_outlier_task(modality)
    if modality == "image":  # uint8 pixels, normalized per batch as the engine does
        rng = np.random.default_rng(0)
        as_uint8 = lambda s: replace(s, X=rng.integers(0, 256, s.X.shape, dtype=np.uint8))  # noqa: E731
        task = replace(
            task,
            train=as_uint8(task.train),
            test=as_uint8(task.test),
            info=replace(task.info, channel_mean=(0.4,), channel_std=(0.2,)),
        )
    info = task.info
    expected = _brute_force(
        as_float(task.train.normal, info.channel_mean, info.channel_std, info.modality),
        as_float(task.test.X, info.channel_mean, info.channel_std, info.modality),
    )
    for budget in (64, 4096, 2**28):  # 1 query x 4 train points ... everything at once
        method = _method(registry, "nearest_neighbour", task, budget_bytes=budget).fit(
            task.for_fit(), FitContext(seed=0)
        )
        np.testing.assert_allclose(method.anomaly_score(task.test.X), expected, rtol=1e-4, atol=1e-4)
    assert chunk_sizes(len(task.train.normal), 64) == (1, 4)


def test_nearest_neighbour_chunks_bound_memory_at_cifar_scale() -> None:
    q, t = chunk_sizes(50_000)
    assert t == 8192 and q * t * 4 * 4 <= 256 * 2**20
