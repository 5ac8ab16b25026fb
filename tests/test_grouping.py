"""Grouping: which jobs train together (``odbench.engine.grouping``), and what the runner does with a group."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from odbench.cli import main
from odbench.engine.execute import WorkItem
from odbench.engine.executors import LocalPoolExecutor
from odbench.engine.grouping import GroupItem, group_items
from odbench.engine.plan import expand
from odbench.engine.store import Store
from odbench.engine.suite import run_suite
from tests.test_members import OPTIONS, PARAMS, TOLERANCE


def test_the_runner_trains_repetitions_together_and_writes_one_record_each(tmp_path: Path) -> None:
    args = ["run", "--methods", "drocc", "--datasets", "sine2d", "--seeds", "3", "--no-mlflow", "--device", "cpu"]
    args += [f"--param=drocc.{k}={v}" for k, v in PARAMS.items()]
    args += [f"--protocol-option={k}={v}" for k, v in OPTIONS.items()]
    assert main([*args, "--results", str(tmp_path / "grouped")]) == 0
    assert main([*args, "--results", str(tmp_path / "solo"), "--no-seed-groups"]) == 0
    grouped, solo = Store(tmp_path / "grouped"), Store(tmp_path / "solo")
    records = {r["key"]: r for r in grouped.records()}
    assert len(records) == 3 and sorted(r["repetition"] for r in records.values()) == [0, 1, 2]
    for key, record in records.items():
        alone = solo.read(key)
        assert alone is not None and record["status"] == alone["status"] == "ok"
        assert record["group_size"] == 3 and alone["group_size"] == 1
        assert record["fit_seed"] == alone["fit_seed"] and record["params"] == alone["params"]
        assert record["selected_by"] == alone["selected_by"] == "val"
        assert record["selected_epoch"] == alone["selected_epoch"]
        np.testing.assert_allclose(grouped.scores(key)["scores"], solo.scores(key)["scores"], rtol=0, atol=TOLERANCE)
        assert [h["epoch"] for h in record["history"]] == list(range(PARAMS["epochs"]))
        for name, value in alone["metrics"].items():
            assert abs(record["metrics"][name] - value) < 1e-6


def _items(registry, methods: list[str], **options) -> list[WorkItem]:
    plan = expand(registry, methods, ["sine2d"], **options)
    return [WorkItem(job, f"key{i}", "/tmp/store", "cpu") for i, job in enumerate(plan.jobs)]


def test_only_repetitions_of_an_opted_in_method_are_grouped(registry) -> None:
    # drocc opts in; drocc_oe, deepsvdd and ocsvm do not
    items = _items(registry, ["drocc", "drocc_oe", "deepsvdd", "ocsvm"], repetitions=3)
    out = group_items(items, registry)
    groups = [x for x in out if isinstance(x, GroupItem)]
    assert len(groups) == 1 and [m.job.method for m in groups[0].members] == ["drocc"] * 3
    assert sorted(m.job.repetition for m in groups[0].members) == [0, 1, 2]
    assert sorted(x.key for x in out if isinstance(x, WorkItem)) == sorted(
        i.key for i in items if i.job.method != "drocc"
    )
    # different parameters are different groups; a group holds at most max_size members
    other = _items(registry, ["drocc"], repetitions=2, params={"drocc": {"epochs": 3, "only_ce_epochs": 1}})
    out = group_items(items[:3] + other, registry, max_size=2)
    assert [[m.job.repetition for m in x.members] if isinstance(x, GroupItem) else x.job.repetition for x in out] == [
        [0, 1], 2, [0, 1]
    ]  # fmt: skip
    # parameters DROCC's groups let vary (tuned rates, optimizers, radii) share a group; the others do not
    rates = [
        WorkItem(replace(item.job, params={"lr": lr, "optimizer": opt, "radius": r}), f"lr{i}", "/tmp/store", "cpu")
        for i, (item, lr, opt, r) in enumerate(zip(items[:3], [1e-2, 1e-4, 1e-3], ["adam", "sgd", "adam"], [1, 2, 3]))
    ]
    out = group_items(rates + other, registry)
    assert [[m.key for m in x.members] for x in out if isinstance(x, GroupItem)] == [
        ["lr0", "lr1", "lr2"], ["key0", "key1"]
    ]  # fmt: skip


def test_a_group_that_diverges_reruns_its_members_alone(registry, tmp_path: Path) -> None:
    # an absurd rate overflows the logits in the first epoch: each member's solo run then says so itself
    plan = expand(registry, ["drocc"], ["sine2d"], repetitions=2, params={"drocc": {**PARAMS, "lr": 1e30}})
    summary = run_suite(plan, registry, Store(tmp_path))
    assert summary.failed == 2
    for record in Store(tmp_path).records():
        assert record["group_size"] == 1 and record["error"]["type"] == "TrainingDiverged"
        assert "lower the learning rate" in record["error"]["message"]  # the solo loop's message


@pytest.mark.slow
def test_process_pool_workers_run_groups_and_return_every_member(registry, tmp_path: Path) -> None:
    params = {**PARAMS, "epochs": 2, "only_ce_epochs": 1}
    plan = expand(registry, ["drocc", "ocsvm"], ["sine2d"], repetitions=2, params={"drocc": params})
    summary = run_suite(plan, registry, Store(tmp_path), executor=LocalPoolExecutor(2))
    assert summary.ok == 4
    sizes = sorted((r["method"], r["group_size"], r["peak_rss_scope"]) for r in Store(tmp_path).records())
    assert sizes == [("drocc", 2, "group")] * 2 + [("ocsvm", 1, "job")] * 2


def test_members_whose_fixed_parameters_differ_never_train_together(registry) -> None:
    """Only parameters the method lets vary (``group_varying``) may differ within a group; any other splits it.

    Checked twice: the planner's grouping keeps such jobs apart, and
    ``fit_group`` refuses them if handed them anyway (a tuning round or a
    caller that grouped by hand).
    """
    from odbench.core.contracts import FitContext
    from odbench.engine.execute import job_task

    items = _items(registry, ["drocc"], repetitions=2)
    varied = [
        WorkItem(replace(items[0].job, params={**items[0].job.params, "hidden": 8}), "hidden8", "/tmp/store", "cpu"),
        WorkItem(replace(items[1].job, params={**items[1].job.params, "lr": 1e-4}), "lr", "/tmp/store", "cpu"),
    ]
    out = group_items([*items, *varied], registry)
    groups = [sorted(m.key for m in x.members) for x in out if isinstance(x, GroupItem)]
    assert groups == [["key0", "key1", "lr"]]  # the other rate joins; the other width stays alone
    plan = expand(registry, ["drocc"], ["sine2d"], repetitions=2, params={"drocc": PARAMS}, protocol_options=OPTIONS)
    cls = registry.method("drocc")
    built = [job_task(registry, job, plan.cache) for job in plan.jobs]
    base = cls.resolve_params(built[0][0].info, PARAMS)
    tasks, ctxs = [t.for_fit() for t, _ in built], [FitContext(seed=s) for _, s in built]
    assert cls.fit_group([base, {**base, "hidden": 8}], tasks, ctxs) is None
    assert cls.fit_group([base, {**base, "epochs": 5}], tasks, ctxs) is None
    bf16 = {**base, "precision": "bf16"}  # a group's (K,) loss parameters and stacked MLP are fp32 only
    assert cls.fit_group([bf16, bf16], tasks, ctxs) is None
    together = cls.fit_group([base, {**base, "lr": 1e-3}], tasks, ctxs)
    assert together is not None and not any(isinstance(m, Exception) for m in together)


def test_jobs_group_only_on_a_network_whose_groups_pay() -> None:
    """The stacked MLP's members train faster together; a LeNet's or an LSTM's do not (measured), so they stay apart."""
    from odbench.engine.grouping import GROUPS_PAY
    from odbench.engine.registry import Registry

    registry = Registry()
    items = _items(registry, ["drocc"], repetitions=2)
    lenet = [
        WorkItem(replace(i.job, params={"backbone": "lenet_mnist"}), f"lenet{n}", "/tmp/store", "cpu")
        for n, i in enumerate(items)
    ]
    out = group_items([*items, *lenet], registry)
    assert [sorted(m.key for m in x.members) for x in out if isinstance(x, GroupItem)] == [["key0", "key1"]]
    assert sorted(x.key for x in out if isinstance(x, WorkItem)) == ["lenet0", "lenet1"]
    assert "lenet_mnist" not in GROUPS_PAY["cpu"] and "mlp" in GROUPS_PAY["cpu"]
