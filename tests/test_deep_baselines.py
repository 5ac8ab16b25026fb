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
from odbench.data.inputs import as_float
from odbench.deep import nets
from odbench.deep.decoders import build_autoencoder
from odbench.deep.hypersphere import CENTRE_EPS, Hypersphere, guard_centre, init_centre
from odbench.deep.neighbours import chunk_sizes
from odbench.deep.training import Batches
from odbench.devkit.testing import obvious_outlier_task

# pretraining off unless a test is about it: it is checked on its own below
FAST = {"epochs": 5, "batch_size": 32, "lr": 1e-2, "rep_dim": 8, "pretrain_epochs": 0}


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


def test_pretraining_reports_separately(registry) -> None:
    task = obvious_outlier_task("tabular")
    reports: list[dict[str, float]] = []
    ctx = FitContext(seed=0, on_epoch=lambda e, m: reports.append(m))
    _method(registry, "deepsvdd", task, **{**FAST, "epochs": 1, "pretrain_epochs": 2}).fit(task.for_fit(), ctx)
    assert [("pretrain_loss" in r) for r in reports] == [True, True, False]
    assert [("loss" in r) for r in reports] == [False, False, True]


def _encoder_at_init(task: Task, seed: int = 0) -> nn.Module:
    # what DeepMethod.start + nets.build make before anything trains
    torch.manual_seed(seed)
    return nets.build("mlp", task.info.shape, out_dim=FAST["rep_dim"], bias=False)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("name", ["deepsvdd", "deepsad"])
def test_pretraining_trains_the_encoder_before_the_hypersphere(registry, name: str) -> None:
    """With lr 0 in the main phase the encoder keeps whatever pretraining left: it must have moved."""
    task = _near_anomaly_task()
    frozen = {**FAST, "epochs": 1, "lr": 0.0, "weight_decay": 0.0}
    off = _method(registry, name, task, **frozen).fit(task.for_fit(), FitContext(seed=0))
    on = _method(registry, name, task, **{**frozen, "pretrain_epochs": 3}).fit(task.for_fit(), FitContext(seed=0))
    init = _encoder_at_init(task)
    assert _same_weights(off.model_.encoder, init)  # lr 0 really freezes the main phase
    assert not _same_weights(on.model_.encoder, init)
    # and it changes what the method scores
    trained = {**FAST, "epochs": 3}
    plain = _method(registry, name, task, **trained).fit(task.for_fit(), FitContext(seed=0))
    pre = _method(registry, name, task, **{**trained, "pretrain_epochs": 3}).fit(task.for_fit(), FitContext(seed=0))
    assert not np.allclose(plain.anomaly_score(task.test.X), pre.anomaly_score(task.test.X))


def test_pretraining_follows_its_own_schedule(registry) -> None:
    """Ruff's ``--ae_lr`` / ``--ae_lr_milestone``: the rate of the autoencoder, cut tenfold at each milestone."""
    task = _near_anomaly_task()
    reports: list[dict[str, float]] = []
    ctx = FitContext(seed=0, on_epoch=lambda e, m: reports.append(m))
    params = {**FAST, "epochs": 1, "pretrain_epochs": 4, "pretrain_lr": 3e-3, "pretrain_lr_milestones": [1, 3]}
    _method(registry, "deepsad", task, **params).fit(task.for_fit(), ctx)
    rates = [r["pretrain_lr"] for r in reports if "pretrain_lr" in r]
    np.testing.assert_allclose(rates, [3e-3, 3e-4, 3e-4, 3e-5])
    assert [r["lr"] for r in reports if "lr" in r] == [FAST["lr"]]  # the main phase keeps its own rate
    # the last autoencoder epoch is kept (no selection on validation scores during pretraining)
    assert not any(k.startswith("pretrain_val") for r in reports for k in r)


def test_pretraining_defaults_are_ruffs(registry) -> None:
    # lukasruff/Deep-SVDD-PyTorch and Deep-SAD-PyTorch main.py: --pretrain True --ae_n_epochs 100 --ae_lr 0.001
    # --ae_batch_size 128 --ae_weight_decay 1e-6, no milestone; 1e-4 on images (their README commands)
    task = obvious_outlier_task("tabular")
    image = obvious_outlier_task("image")
    for name in ("deepsvdd", "deepsad"):
        cls = registry.method(name)
        p = cls.default_params(task.info)
        assert (p["pretrain_epochs"], p["pretrain_lr"], tuple(p["pretrain_lr_milestones"])) == (100, 1e-3, ())
        assert (p["pretrain_batch_size"], p["pretrain_weight_decay"]) == (128, 1e-6)
        assert cls.default_params(image.info)["pretrain_lr"] == 1e-4


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
    plain = {k: v for k, v in OCLN.items() if k not in ("rep_dim", "pretrain_epochs")}  # bce has no embedding
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
