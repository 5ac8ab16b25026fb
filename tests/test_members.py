"""Members trained together (``train_members`` with K > 1) score as they do alone: DROCC on the MLP, LeNet and LSTM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odbench.core.contracts import FitContext
from odbench.deep import nets
from odbench.deep.members import MemberDraws, member_mean
from odbench.deep.stacked import StackedNet
from odbench.deep.training import Member, Objective, TrainConfig, TrainingDiverged, train, train_members
from odbench.devkit.testing import obvious_outlier_task
from odbench.engine.execute import job_task
from odbench.engine.plan import expand

# tiny, but with adversarial epochs after the CE-only ones, and a validation split that selects an epoch per member
PARAMS = {
    "epochs": 6, "only_ce_epochs": 2, "ascent_num_steps": 3, "ascent_step_size": 0.1, "batch_size": 64, "hidden": 16,
    "lr": 1e-2,
}  # fmt: skip
OPTIONS = {"val_anomaly_fraction": 0.3}
TOLERANCE = 1e-5  # on scores of order 1..10: float rounding of batched matmuls, amplified by 6 epochs of Adam


def test_each_member_of_a_seed_group_scores_as_its_solo_run(registry) -> None:
    plan = expand(registry, ["drocc"], ["sine2d"], repetitions=3, params={"drocc": PARAMS}, protocol_options=OPTIONS)
    cls = registry.method("drocc")
    tasks, seeds = zip(*(job_task(registry, job, plan.cache) for job in plan.jobs), strict=True)
    params = cls.resolve_params(tasks[0].info, PARAMS)
    solo = [cls(**params).fit(t.for_fit(), FitContext(seed=s)) for t, s in zip(tasks, seeds, strict=True)]
    group = cls.fit_group([params] * 3, [t.for_fit() for t in tasks], [FitContext(seed=s) for s in seeds])
    assert group is not None and len(group) == 3
    solo_scores = [m.anomaly_score(t.test.X) for m, t in zip(solo, tasks, strict=True)]
    for alone, together, task, scores in zip(solo, group, tasks, solo_scores, strict=True):
        assert together.result_.selected_by == alone.result_.selected_by == "val"
        assert together.result_.best_epoch == alone.result_.best_epoch
        np.testing.assert_allclose(together.anomaly_score(task.test.X), scores, rtol=0, atol=TOLERANCE)
        losses = [r["loss"] for r in together.result_.history]
        np.testing.assert_allclose(losses, [r["loss"] for r in alone.result_.history], rtol=1e-5)
    # the members are three different runs (splits and streams), not one run three times
    assert not np.allclose(solo_scores[0][:50], solo_scores[1][:50], atol=1e-2)


# tuning trials: each member its own rate, optimizer, weight decay, radius, step and mu (solo: rows, group: columns)
TRIALS = [
    {"lr": 1e-2, "optimizer": "adam"},
    {"lr": 3e-3, "optimizer": "sgd", "momentum": 0.9, "radius": 0.5, "mu": 0.5},
    {"lr": 1e-2, "optimizer": "adam", "weight_decay": 1e-3, "ascent_step_size": 0.01, "gamma": 3.0},
    {"lr": 1e-3, "optimizer": "sgd", "momentum": 0.0, "radius": 2.0, "ascent_step_size": 0.05},
]


def _solo_and_group(registry, trials: list[dict], repetitions: int = 1):
    plan = expand(registry, ["drocc"], ["sine2d"], repetitions=repetitions, params={"drocc": PARAMS},
                  protocol_options=OPTIONS)  # fmt: skip
    cls = registry.method("drocc")
    built = [job_task(registry, job, plan.cache) for job in plan.jobs]
    tasks = [built[i % len(built)][0] for i in range(len(trials))]
    seeds = [built[i % len(built)][1] for i in range(len(trials))]
    params = [cls.resolve_params(tasks[0].info, {**PARAMS, **t}) for t in trials]
    solo = []
    for p, t, s in zip(params, tasks, seeds, strict=True):
        try:
            solo.append(cls(**p).fit(t.for_fit(), FitContext(seed=s)))
        except Exception as err:
            solo.append(err)
    group = cls.fit_group(params, [t.for_fit() for t in tasks], [FitContext(seed=s) for s in seeds])
    return tasks, solo, group


def test_tuning_trials_of_other_parameters_train_together_as_they_train_alone(registry) -> None:
    tasks, solo, group = _solo_and_group(registry, TRIALS, repetitions=2)
    assert group is not None and len(group) == len(TRIALS)
    scores = [m.anomaly_score(t.test.X) for m, t in zip(solo, tasks, strict=True)]
    for alone, together, task, expected in zip(solo, group, tasks, scores, strict=True):
        assert together.result_.best_epoch == alone.result_.best_epoch
        np.testing.assert_allclose(together.anomaly_score(task.test.X), expected, rtol=0, atol=TOLERANCE)
        for name, rtol in (("lr", 1e-12), ("loss", 1e-5)):
            np.testing.assert_allclose(
                [r[name] for r in together.result_.history], [r[name] for r in alone.result_.history], rtol=rtol
            )
    # four different trainings, not one four times
    assert min(np.abs(scores[0] - s).max() for s in scores[1:]) > 1e-2


def test_a_member_that_diverges_stops_alone_and_the_others_train_on(registry) -> None:
    # an absurd rate blows up member 1's loss; member 0, next to it, must not notice
    tasks, solo, group = _solo_and_group(registry, [{"lr": 1e-2}, {"lr": 1e30}, {"lr": 1e-3}])
    assert group is not None
    assert isinstance(solo[1], TrainingDiverged) and isinstance(group[1], TrainingDiverged)
    assert str(group[1]) == str(solo[1])  # the same guard, at the same batch
    for k in (0, 2):
        np.testing.assert_allclose(
            group[k].anomaly_score(tasks[k].test.X), solo[k].anomaly_score(tasks[k].test.X), rtol=0, atol=TOLERANCE
        )


def test_a_member_whose_context_stops_it_ends_with_that_exception(registry) -> None:
    plan = expand(registry, ["drocc"], ["sine2d"], repetitions=2, params={"drocc": PARAMS}, protocol_options=OPTIONS)
    cls = registry.method("drocc")
    built = [job_task(registry, job, plan.cache) for job in plan.jobs]
    params = cls.resolve_params(built[0][0].info, PARAMS)
    heard: list[int] = []

    class Pruned(Exception):
        pass

    def prune_at_epoch_1(epoch: int, numbers: dict[str, float]) -> None:
        heard.append(epoch)
        if epoch == 1:
            raise Pruned()

    ctxs = [FitContext(seed=built[0][1], on_epoch=prune_at_epoch_1), FitContext(seed=built[1][1])]
    group = cls.fit_group([params, params], [t.for_fit() for t, _ in built], ctxs)
    assert group is not None and isinstance(group[0], Pruned) and heard == [0, 1]
    alone = cls(**params).fit(built[1][0].for_fit(), FitContext(seed=built[1][1]))
    np.testing.assert_allclose(
        group[1].anomaly_score(built[1][0].test.X), alone.anomaly_score(built[1][0].test.X), rtol=0, atol=TOLERANCE
    )


def test_networks_the_stack_cannot_run_are_left_to_solo_training() -> None:
    torch.manual_seed(0)
    mlps = [nets.build("mlp", (6,), out_dim=1, hidden=8) for _ in range(3)]
    stacked = StackedNet.of(mlps)
    assert stacked is not None
    x = torch.randn(3 * 5, 6)
    expected = torch.cat([m(x[5 * k : 5 * (k + 1)]) for k, m in enumerate(mlps)])
    torch.testing.assert_close(stacked(x), expected)
    # BatchNorm statistics are per member and batch; mixed architectures have no common stack
    assert StackedNet.of([nets.build("lenet_mnist", (1, 28, 28), out_dim=1) for _ in range(2)]) is None
    assert StackedNet.of([mlps[0], nets.build("mlp", (6,), out_dim=1, hidden=4)]) is None


def _trained_like_members(k: int = 4, width: int = 5) -> list[torch.nn.Module]:
    """Members with weights far from their initialisation, so that many hidden units sit near their kink."""
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        member = nets.build("mlp", (width,), out_dim=1, hidden=16)
        with torch.no_grad():
            for p in member.parameters():
                p.mul_(3.0)
        members.append(member)
    return members


def _closed_form_gradient(closed_form, points: torch.Tensor, dloss_dlogit) -> torch.Tensor:
    """``d loss(f(p)) / dp`` in rows, through the closed form's columns (as the search in columns takes it)."""
    from odbench.deep.stacked import from_columns, to_columns

    columns = to_columns(points, closed_form.size)
    return from_columns(closed_form.gradient_near(columns, dloss_dlogit)(torch.zeros_like(columns))).view_as(points)


def test_the_stacked_mlps_closed_form_gradient_is_autograds() -> None:
    members = _trained_like_members()
    stacked = StackedNet.of(members)
    assert stacked is not None and (closed_form := stacked.frozen_gradient()) is not None
    points = torch.randn(4 * 33, 5, generator=torch.Generator().manual_seed(1))
    ours = _closed_form_gradient(closed_form, points, torch.sigmoid)
    for k, member in enumerate(members):
        mine = points[k * 33 : (k + 1) * 33].clone().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            member(mine).squeeze(1), torch.zeros(33), reduction="sum"
        )
        (expected,) = torch.autograd.grad(loss, [mine])
        assert torch.allclose(ours[k * 33 : (k + 1) * 33], expected, rtol=1e-5, atol=1e-7)
    # the logits themselves: an outer derivative of 1 leaves df/dp, an identity one f * df/dp
    df = _closed_form_gradient(closed_form, points, torch.ones_like).clone()
    f_df = _closed_form_gradient(closed_form, points, lambda f: f)
    with torch.no_grad():
        f = torch.cat([m(points[k * 33 : (k + 1) * 33]).squeeze(1) for k, m in enumerate(members)])
    assert torch.allclose(f_df, f.unsqueeze(1) * df, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("projection", ["annulus", "closure"])
def test_a_stacked_mlps_ascent_runs_without_its_forward(projection: str) -> None:
    """The group's ascent with the Euclidean annulus takes the closed form: not one forward of the stacked net.

    The whole search stays in the feature-major columns; any other
    projection takes autograd on the stacked net.  Both are the ascent
    autograd takes member by member.
    """
    from odbench.drocc.ascent import adversarial_search
    from odbench.drocc.projections import Annulus, annulus_project

    members = _trained_like_members()
    stacked = StackedNet.of(members)
    assert stacked is not None
    calls: list[int] = []
    stacked.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(4 * 20, 5, generator=torch.Generator().manual_seed(2))
    h = torch.randn(4 * 20, 5, generator=torch.Generator().manual_seed(3))
    h_before = h.clone()
    annulus = Annulus(1.0, 2.0)
    project = annulus if projection == "annulus" else (lambda o: annulus_project(o, 1.0, 2.0))

    found = adversarial_search(stacked, x, h, project, 0.05, 12, project_every=5)
    # points of another shape that the MLP flattens come back in their shape
    shaped = adversarial_search(stacked, x.view(-1, 1, 5), h.view(-1, 1, 5), project, 0.05, 12, project_every=5)
    assert shaped.shape == (4 * 20, 1, 5) and torch.allclose(shaped.view_as(found), found, atol=1e-6)
    assert (calls == []) == (projection == "annulus")
    assert torch.equal(h, h_before)  # the offsets are the caller's: the search works on its own copy
    for k, member in enumerate(members):
        alone = adversarial_search(member, x[k * 20 : (k + 1) * 20], h[k * 20 : (k + 1) * 20], annulus, 0.05, 12, 5)
        assert torch.allclose(found[k * 20 : (k + 1) * 20], alone, atol=1e-5)


def test_the_annulus_projects_feature_major_columns_as_it_projects_rows() -> None:
    from odbench.deep.stacked import from_columns, to_columns
    from odbench.drocc.projections import Annulus

    # norms below, inside and above [1, 2], and an all-zero offset
    h = torch.randn(3 * 16, 5, generator=torch.Generator().manual_seed(6)) * torch.linspace(0.05, 1.5, 48).unsqueeze(1)
    h[7] = 0.0
    annulus = Annulus(1.0, 2.0)
    columns = to_columns(h, 3)
    assert torch.equal(from_columns(columns), h)
    annulus.project_columns_(columns)
    assert torch.allclose(from_columns(columns), annulus(h), rtol=1e-6, atol=1e-7)
    norms = from_columns(columns).norm(dim=1)
    assert bool(((norms > 1 - 1e-5) & (norms < 2 + 1e-5)).sum() == 47) and float(norms[7]) == 0.0


@pytest.mark.parametrize("varying", ["radius", "gamma", "both"])
def test_an_annulus_per_member_projects_each_members_points_onto_its_own(varying: str) -> None:
    from odbench.deep.stacked import from_columns, to_columns
    from odbench.drocc.projections import Annulus, annulus_project

    h = torch.randn(3 * 16, 5, generator=torch.Generator().manual_seed(7)) * torch.linspace(0.05, 6.0, 48).unsqueeze(1)
    radii, gammas = [1.0, 0.5, 2.0], [2.0, 3.0, 1.5]
    as_tensor = lambda values: torch.tensor(values)  # noqa: E731  (K,): one value per member
    radius = as_tensor(radii) if varying in ("radius", "both") else 1.0
    gamma = as_tensor(gammas) if varying in ("gamma", "both") else 2.0
    annulus = Annulus(radius, gamma)
    expected = torch.cat([
        annulus_project(h[16 * k : 16 * (k + 1)], float(radius if isinstance(radius, float) else radii[k]),
                        float(gamma if isinstance(gamma, float) else gammas[k]))
        for k in range(3)
    ])  # fmt: skip
    torch.testing.assert_close(annulus(h), expected)  # rows, member after member
    torch.testing.assert_close(from_columns(annulus.project_columns_(to_columns(h, 3))), expected)


# ---------------------------------------------------------------- any backbone: LeNet and LSTM members

IMAGE_PARAMS = {"epochs": 3, "only_ce_epochs": 1, "ascent_num_steps": 3, "ascent_step_size": 0.1, "batch_size": 32}


@pytest.mark.parametrize(("modality", "k"), [("image", 4), ("sequence", 2)])
def test_a_group_of_any_backbone_scores_as_its_solo_runs(registry, modality: str, k: int) -> None:
    """A LeNet group of 4 (and an LSTM group of 2) equals its solo runs.

    Each member runs its own network on its own rows (``LoopMembers``), with
    its own batches and draws.  The one difference from its solo run is the
    loss's mean: per member from unreduced terms, where alone torch's fused
    mean reduction runs (its backward may round a gradient differently in
    the last bit).  Measured on an AVX2 EPYC: equal to the last bit.  The
    tolerance, 1e-5 on scores of order 1..10, lets another CPU's kernels
    round those two means apart over three epochs of Adam; a wrong batch,
    draw or weight moves scores by more than 1e-2.
    """
    cls = registry.method("drocc")
    tasks = [obvious_outlier_task(modality, seed=s) for s in range(k)]
    params = cls.resolve_params(tasks[0].info, IMAGE_PARAMS)
    solo = [cls(**params).fit(t.for_fit(), FitContext(seed=s)) for s, t in enumerate(tasks)]
    group = cls.fit_group([params] * k, [t.for_fit() for t in tasks], [FitContext(seed=s) for s in range(k)])
    assert group is not None and all(not isinstance(m, Exception) for m in group)
    scores = [m.anomaly_score(t.test.X) for m, t in zip(solo, tasks, strict=True)]
    for alone, together, task, expected in zip(solo, group, tasks, scores, strict=True):
        assert together.result_.best_epoch == alone.result_.best_epoch
        np.testing.assert_allclose(together.anomaly_score(task.test.X), expected, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(
            [r["loss"] for r in together.result_.history], [r["loss"] for r in alone.result_.history], rtol=1e-5
        )
    assert min(np.abs(scores[0] - s).max() for s in scores[1:]) > 1e-2  # k different runs


class HookRecorder(Objective):
    """A classifier objective (normals high) that records what its ``epoch_start`` hook saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, torch.nn.Module, float]] = []

    def loss(self, model, x, y, step):
        logits = model(x).reshape(len(x))
        return member_mean(model, torch.nn.functional.binary_cross_entropy_with_logits, logits, torch.ones_like(logits))

    def score(self, model, x):
        return -model(x).reshape(len(x))

    def epoch_start(self, model, epoch, data):
        self.seen.append((epoch, model, float(sum(p.detach().double().sum() for p in model.parameters()))))


@pytest.mark.parametrize("backbone", ["mlp", "lenet_mnist"])
def test_every_hook_runs_for_every_member_on_its_own_current_network(backbone: str) -> None:
    modality = "tabular" if backbone == "mlp" else "image"
    config = TrainConfig(epochs=3, batch_size=32, lr=1e-2, eval_every=5)  # no scoring between hooks to sync weights

    def member(seed: int) -> Member:
        task = obvious_outlier_task(modality, seed=seed)
        torch.manual_seed(seed)
        model = (
            nets.build(backbone, task.info.shape, hidden=8)
            if backbone == "mlp"
            else nets.build(backbone, task.info.shape)
        )
        return Member(model, HookRecorder(), task.train.normal, None, task, FitContext(seed=seed), config)

    alone = [member(s) for s in range(3)]
    for m in alone:
        train(m.model, m.objective, m.X, m.y, m.task, m.ctx, m.config)
    together = [member(s) for s in range(3)]
    results = train_members(together)
    assert all(not isinstance(r, Exception) for r in results)
    for a, t in zip(alone, together, strict=True):
        assert [e for e, _, _ in t.objective.seen] == [0, 1, 2]  # every epoch's hook, for this member
        assert all(model is t.model for _, model, _ in t.objective.seen)  # on its own network
        # holding its current weights (a stacked group keeps them elsewhere between hooks)
        np.testing.assert_allclose([w for *_, w in t.objective.seen], [w for *_, w in a.objective.seen], rtol=1e-5)


def test_a_draw_from_a_groups_generator_is_each_members_own_draw() -> None:
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    expected = torch.cat([torch.randn(5, 2, generator=torch.Generator().manual_seed(s)) for s in (3, 4)])
    group = torch.Generator()
    with MemberDraws(group, generators):
        drawn = torch.randn((10, 2), generator=group)
        with pytest.raises(ValueError, match="does not split"):
            torch.randn(7, 2, generator=group)
        unrelated = torch.randn(3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(drawn, expected)
    torch.testing.assert_close(unrelated, torch.randn(3, generator=torch.Generator().manual_seed(0)))
