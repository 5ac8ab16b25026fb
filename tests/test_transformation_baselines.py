"""GOAD, DAGMM and GEOM keep their papers' mechanisms (beyond the generic contract).

GOAD: the random maps differ and the classifier learns to tell them apart;
the centre triplet term is in the loss; the score is the transformation
negative log-likelihood.  DAGMM: the energy is a mixture's (two clusters
leave the point between them improbable), the representation carries the two
reconstruction features, the score is the energy under the training set's
mixture.  GEOM: 72 distinct transformations (flips, reflect-filled
translations, quarter turns), the Dirichlet fit recovers known parameters,
the score is the Dirichlet normality of the fitted alpha.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.nn import functional as F

from odbench.api import DataInfo, FitContext, Split, Task
from odbench.deep.compression_estimation import CompressionEstimation, reconstruction_features
from odbench.deep.dirichlet import dirichlet_normality, fit_dirichlet, inverse_digamma
from odbench.deep.gaussian_mixture import diagonal_penalty, mixture_parameters, sample_energy
from odbench.deep.geometric_transforms import Geometric, all_views, apply, transformations
from odbench.deep.training import Step
from odbench.deep.transformation_centres import centre_triplet_loss, squared_distances, transformation_nll


def _task(X: np.ndarray, shape: tuple[int, ...], modality: str = "tabular") -> Task:
    rng = np.random.default_rng(0)
    split = Split(X=X, y=None, index=np.arange(len(X)))
    test_X = np.concatenate([X[:20], (X[:20] + 6 * rng.standard_normal(X[:20].shape)).astype(np.float32)])
    test = Split(X=test_X, y=np.r_[np.zeros(20, int), np.ones(20, int)], index=np.arange(40))
    empty = Split(X=X[:0], y=np.zeros(0, int), index=np.arange(0))
    info = DataInfo("toy", modality, shape, len(X), backbone="mlp")
    return Task("toy", "synthetic", None, split, empty, test, info, ("auroc",))


def _tabular(n: int = 256, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# ---------------------------------------------------------------- GOAD


def test_goad_maps_differ_and_its_classifier_tells_them_apart(registry) -> None:
    task = _task(_tabular(), (6,))
    goad = registry.method("goad")(epochs=10, n_transforms=16, transform_dim=32, hidden=32, batch_size=32, lr=1e-2)
    goad.fit(task.for_fit(), FitContext(seed=0))
    model = goad.model_
    maps = model.maps.flatten(1)
    assert torch.cdist(maps, maps).add(torch.eye(16) * 1e9).min() > 1.0  # 16 different random maps
    with torch.no_grad():
        _, logits = model(torch.as_tensor(task.train.X))
    accuracy = (logits.argmax(-1) == torch.arange(16)).float().mean().item()
    assert accuracy > 0.8, f"the classifier names the map for {accuracy:.0%} of views (chance 1/16)"


def test_goad_loss_is_cross_entropy_plus_the_weighted_centre_triplet_term(registry) -> None:
    task = _task(_tabular(64), (6,))
    goad = registry.method("goad")(epochs=1, n_transforms=8, transform_dim=4, batch_size=64)
    goad.fit(task.for_fit(), FitContext(seed=0))
    model, objective = goad.model_, goad.objective_
    x = torch.as_tensor(task.train.X)
    step = Step(epoch=0, generator=torch.Generator(), device=torch.device("cpu"))
    objective.epoch_start(model, 0, None)
    with torch.no_grad():
        objective.triplet_weight = 0.0
        ce = objective.loss(model, x, None, step)
        objective.triplet_weight = 2.0
        both = objective.loss(model, x, None, step)
        z, _ = model(x)
    triplet = centre_triplet_loss(z, objective.margin)
    assert triplet > 0
    assert both.item() == pytest.approx(ce.item() + 2.0 * triplet.item(), rel=1e-5)


def test_centre_triplet_loss_is_zero_when_views_sit_apart_and_the_margin_when_collapsed() -> None:
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    apart = centres[None].repeat(5, 1, 1) + 0.01 * torch.randn(5, 3, 2)
    assert centre_triplet_loss(apart, margin=1.0).item() == 0.0
    collapsed = torch.zeros(5, 3, 2)
    assert centre_triplet_loss(collapsed, margin=1.0).item() == pytest.approx(1.0)
    # squared distances as the direct formula gives them
    z = torch.randn(4, 3, 2)
    direct = ((z[:, :, None, :] - centres[None, None]) ** 2).sum(-1)
    assert torch.allclose(squared_distances(z, centres), direct, atol=1e-5)


def test_goad_score_is_minus_log_likelihood_of_recognising_every_map() -> None:
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # squared distance 1 apart
    at_own = centres[None]  # each view at its own centre: P(own) = 1 / (1 + e^-1) for both maps
    swapped = centres.flip(0)[None]  # each view at the other's centre: P(own) = e^-1 / (1 + e^-1)
    assert transformation_nll(at_own, centres).item() == pytest.approx(2 * math.log1p(math.exp(-1)), rel=1e-6)
    assert transformation_nll(swapped, centres).item() == pytest.approx(2 * (1 + math.log1p(math.exp(-1))), rel=1e-6)


# ---------------------------------------------------------------- DAGMM


def test_energy_is_a_mixtures_two_clusters_make_the_point_between_them_improbable() -> None:
    rng = np.random.default_rng(0)
    left, right = rng.normal(-4, 0.3, (200, 2)), rng.normal(4, 0.3, (200, 2))
    z = torch.as_tensor(np.concatenate([left, right]))
    gamma = torch.cat([torch.tensor([[1.0, 0.0]]).repeat(200, 1), torch.tensor([[0.0, 1.0]]).repeat(200, 1)])
    phi, mu, sigma = mixture_parameters(z, gamma)
    assert torch.allclose(phi, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(mu[1], z[200:].mean(0), atol=1e-9)
    probes = torch.tensor([[-4.0, -4.0], [4.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    energy = sample_energy(probes, phi, mu, sigma, eps=1e-3)
    assert energy[2] > energy[0] + 50 and energy[2] > energy[1] + 50  # the gap between the clusters
    # one Gaussian over both clusters would place the gap at its mean, the most probable point
    one = mixture_parameters(z, torch.ones(400, 1))
    single = sample_energy(probes, *one, eps=1e-3)
    assert single[2] < single[0]
    assert diagonal_penalty(sigma, 0.0).item() == pytest.approx(
        float((1 / torch.diagonal(sigma, dim1=1, dim2=2)).sum())
    )


def test_dagmm_representation_is_code_plus_relative_distance_and_cosine() -> None:
    x = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(reconstruction_features(x, torch.tensor([[3.0, 4.0]])), torch.tensor([[0.0, 1.0]]), atol=1e-6)
    assert torch.allclose(
        reconstruction_features(x, torch.tensor([[-3.0, -4.0]])), torch.tensor([[2.0, -1.0]]), atol=1e-6
    )
    torch.manual_seed(0)
    net = CompressionEstimation(6, hidden=(12, 4), latent=1, estimation_hidden=10, n_components=2, dropout=0.5).eval()
    x = torch.randn(5, 6)
    z, x_hat, gamma = net(x)
    assert z.shape == (5, 3) and net.estimation[0].in_features == 3  # the paper's FC(3, 10, tanh) on Thyroid
    assert torch.allclose(z[:, 1:], reconstruction_features(x, x_hat))
    assert torch.allclose(gamma.sum(1), torch.ones(5))


def test_dagmm_scores_the_energy_under_the_training_sets_mixture(registry) -> None:
    task = _task(_tabular(), (6,))
    dagmm = registry.method("dagmm")(epochs=5, batch_size=64, lr=1e-3, hidden=(12, 4), n_components=2)
    dagmm.fit(task.for_fit(), FitContext(seed=0))
    model = dagmm.model_.eval()
    train = torch.as_tensor(task.train.X)
    assert torch.allclose(model.scaled(train).min(0).values, torch.zeros(6)) and torch.allclose(
        model.scaled(train).max(0).values, torch.ones(6)
    )
    with torch.no_grad():
        z, _, gamma = model(torch.as_tensor(task.train.X))
        phi, mu, sigma = mixture_parameters(z, gamma)
        assert torch.allclose(model.mu, mu) and torch.allclose(model.sigma, sigma)
        z_test = model(torch.as_tensor(task.test.X))[0]
        expected = sample_energy(z_test, phi, mu, sigma, eps=1e-3).numpy()
    assert np.allclose(dagmm.anomaly_score(task.test.X), expected, rtol=1e-5)


# ---------------------------------------------------------------- GEOM


def test_geom_has_72_distinct_transformations_in_the_authors_order() -> None:
    ts = transformations(8)
    assert len(ts) == 72 and len(set(ts)) == 72
    assert (
        ts[0] == Geometric(False, 0, 0, 0) and ts[1] == Geometric(False, 0, 0, 1) and ts[-1] == Geometric(True, 8, 8, 3)
    )
    image = torch.rand(1, 3, 32, 32)
    views = all_views(image, 8)[0].flatten(1)
    assert views.shape == (72, 3 * 32 * 32)
    assert torch.cdist(views, views).add(torch.eye(72) * 1e9).min() > 1.0  # 72 different images
    assert torch.equal(views[0], image.flatten())  # the first is the identity


def test_geometric_steps_match_keras_flip_reflect_translation_and_rot90() -> None:
    image = torch.rand(1, 1, 10, 10)
    x = image[0, 0].numpy()
    flipped = apply(image, Geometric(True, 0, 0, 0))[0, 0].numpy()
    assert np.array_equal(flipped, np.fliplr(x))
    # Keras' apply_affine_transform(tx, ty, fill_mode='reflect'): output[r, c] = input[r + tx, c + ty], reflected
    moved = apply(image, Geometric(False, 3, -4, 0))[0, 0].numpy()
    assert np.allclose(moved, ndimage.shift(x, (-3, 4), order=0, mode="reflect"))
    turned = apply(image, Geometric(False, 0, 0, 1))[0, 0].numpy()
    assert np.array_equal(turned, np.rot90(x, 1))
    # flip, then translate, then rotate
    composed = apply(image, Geometric(True, 2, 0, 3))[0, 0].numpy()
    assert np.allclose(composed, np.rot90(ndimage.shift(np.fliplr(x), (-2, 0), order=0, mode="reflect"), 3))


def test_dirichlet_fit_recovers_known_parameters_and_matches_the_fixed_point() -> None:
    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.5, 3.0, size=(4, 6)) * np.array([[0.5], [2.0], [20.0], [200.0]])
    draws = np.stack([rng.dirichlet(a, size=4000) for a in alpha], axis=1)  # (N, T, K)
    fitted = fit_dirichlet(torch.log(torch.as_tensor(draws)))
    assert np.allclose(fitted.numpy(), alpha, rtol=0.1)
    # where the authors' fixed-point iteration converges, it reaches the same maximum
    log_p = torch.log(torch.as_tensor(draws[:, :2]))
    mean_log, start = log_p.mean(0), fit_dirichlet(log_p, max_iter=0)
    fixed = start
    for _ in range(3000):
        fixed = inverse_digamma(torch.digamma(fixed.sum(-1, keepdim=True)) + mean_log)
    assert np.allclose(fit_dirichlet(log_p).numpy(), fixed.numpy(), rtol=1e-6)
    assert torch.allclose(inverse_digamma(torch.digamma(torch.tensor([0.1, 1.0, 50.0], dtype=torch.float64))),
                          torch.tensor([0.1, 1.0, 50.0], dtype=torch.float64))  # fmt: skip


def _geom_fit(registry, **params):
    rng = np.random.default_rng(0)
    X = (rng.random((16, 1, 8, 8)) * 255).astype(np.uint8)
    task = _task(X, (1, 8, 8), "image")
    task = Task("toy", "synthetic", None, task.train, task.val, Split(X=X[:6], y=np.zeros(6, int), index=np.arange(6)),
                task.info, ("auroc",))  # fmt: skip
    geom = registry.method("geom")(epochs=1, batch_size=4, width=1, base_width=2, shift=2, **params)
    return geom.fit(task.for_fit(), FitContext(seed=0)), task


def test_geom_scores_by_the_dirichlet_normality_of_the_fitted_alpha(registry) -> None:
    geom, task = _geom_fit(registry)
    model = geom.model_.eval()
    images = torch.as_tensor(task.train.X).float() / 255.0
    with torch.no_grad():
        train_log_p = F.log_softmax(model(images).double(), -1)
        alpha = fit_dirichlet(train_log_p)
        test_log_p = F.log_softmax(model(torch.as_tensor(task.test.X).float() / 255.0).double(), -1)
    assert train_log_p.shape == (16, 72, 72)
    assert torch.allclose(model.alpha, alpha, rtol=1e-6)
    assert not torch.allclose(alpha, torch.ones_like(alpha))
    dirichlet = geom.anomaly_score(task.test.X)
    assert np.allclose(dirichlet, -dirichlet_normality(alpha, test_log_p).numpy(), rtol=1e-6)
    simplified, _ = _geom_fit(registry, score="simplified")
    expected = -torch.diagonal(test_log_p, dim1=1, dim2=2).exp().mean(-1).numpy()
    assert np.allclose(simplified.anomaly_score(task.test.X), expected, rtol=1e-5)
