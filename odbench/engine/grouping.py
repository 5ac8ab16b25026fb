"""Seed groups: which work items train together, and running one group.

Jobs of a method whose own class sets ``supports_seed_groups`` (a subclass
says so again: it may have changed the loss), on a network whose groups pay
on their device (:data:`GROUPS_PAY`), and that differ only in their
repetition and in the parameters the class names in ``group_varying`` (same
method, dataset, protocol and options, normal class, other parameters,
selection, base seed, device) form a :class:`GroupItem` of up to
``max_size`` members.  Once their tasks are built, the members whose
training splits have one size (one batch schedule) are fitted together by
``Method.fit_group``; each is then scored and written as its own record
with the same code as a solo job (``odbench.engine.execute``), marked with
``group_size``.  Where the method declines (``fit_group`` returns ``None``),
a member is alone in its size, or the stacked optimizer step overflows, the
members run one by one, exactly as solo jobs; a member whose training
diverged in the group runs again alone, so that its record says what its
solo run says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from odbench.core.contracts import FitContext, FitTask, Method
from odbench.core.errors import TrainingDiverged
from odbench.engine.execute import (
    EventCallback,
    Outcome,
    Prepared,
    WorkItem,
    execute,
    failed,
    finish,
    fit_solo,
    prepare,
    torch_threads,
)
from odbench.engine.loading import DataCache
from odbench.engine.registry import Registry

#: most jobs in one group: the members' memory adds up, and a pool spreads groups over its workers
MAX_GROUP = 16

#: by device kind, the backbones whose members train faster together than one by one
#: (``scripts/bench_members.py``).  The tabular MLP's members run as one stacked network; any other backbone's
#: run one after another inside the group (``odbench.deep.members.LoopMembers``): 1.00x on a CPU (AMD EPYC, 4
#: LeNet members), and ``torch.func.vmap`` over their stacked weights 0.98x, so their jobs stay apart and a pool
#: spreads them over its workers.  A GPU has not been measured: it gets what a CPU gets until it is.
GROUPS_PAY: dict[str, frozenset[str]] = {"cpu": frozenset({"mlp"}), "cuda": frozenset({"mlp"})}


@dataclass(frozen=True)
class GroupItem:
    """Work items that differ only in their repetition, run together by :func:`execute_group`."""

    members: tuple[WorkItem, ...]

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """The environment its worker needs (the members share it)."""
        return self.members[0].env


Item = WorkItem | GroupItem


def group_items(items: Sequence[WorkItem], registry: Registry, max_size: int = MAX_GROUP) -> list[Item]:
    """``items`` with the compatible jobs of opted-in methods gathered into groups, in first-member order.

    A group of one stays a plain :class:`WorkItem`.
    """
    open_groups: dict[str, list[WorkItem]] = {}  # compatibility -> the group still taking members
    order: list[WorkItem | list[WorkItem]] = []
    for item in items:
        cls = registry.method(item.job.method)
        if not opted_in(cls) or item.job.scoring != "eval" or not groups_pay(item, registry):  # eval: a group's scoring
            order.append(item)
            continue
        key = _compatibility(item, group_varying(cls))
        if key not in open_groups or len(open_groups[key]) >= max_size:  # a full group starts another
            open_groups[key] = []
            order.append(open_groups[key])
        open_groups[key].append(item)
    return [
        entry if isinstance(entry, WorkItem) else entry[0] if len(entry) == 1 else GroupItem(tuple(entry))
        for entry in order
    ]


def groups_pay(item: WorkItem, registry: Registry) -> bool:
    """Whether ``item``'s network trains faster in a group than alone on its device (:data:`GROUPS_PAY`)."""
    backbone = item.job.params.get("backbone") or registry.dataset(item.job.dataset).backbone
    kind = "cuda" if item.device.startswith("cuda") else "cpu"  # "auto" resolves in the worker; a CPU is the floor
    return backbone in GROUPS_PAY[kind]


def opted_in(cls: type[Method]) -> bool:
    """Whether ``cls`` itself sets ``supports_seed_groups``: a subclass may change the loss, so it is not inherited."""
    return bool(vars(cls).get("supports_seed_groups", False))


def group_varying(cls: type[Method]) -> frozenset[str]:
    """The parameters in which ``cls``'s group members may differ, read from the class itself as :func:`opted_in`."""
    return frozenset(vars(cls).get("group_varying", frozenset()))


def _compatibility(item: WorkItem, varying: frozenset[str]) -> str:
    """Everything of a work item but its repetition (and so its seed and key) and its ``varying`` parameters."""
    job = item.job
    params = {k: v for k, v in job.params.items() if k not in varying}
    fields = [
        job.method, job.dataset, job.protocol, job.normal_class, job.base_seed, params, job.protocol_options,
        job.selection, item.store_root, item.device, item.plugin_dirs, item.env,
    ]  # fmt: skip
    return json.dumps(fields, sort_keys=True, default=repr)


def run_item(
    item: Item,
    on_event: EventCallback | None = None,
    rss_scope: str = "process",
    cache: DataCache | None = None,
    threads: int | None = None,
) -> list[Outcome]:
    """The outcomes of one item: one for a job, one per member for a group; on ``threads`` torch threads."""
    with torch_threads(threads):
        if isinstance(item, GroupItem):
            return execute_group(item, on_event, rss_scope, cache)
        return [execute(item, on_event, rss_scope, cache)]


def execute_group(
    group: GroupItem, on_event: EventCallback | None = None, rss_scope: str = "process", cache: DataCache | None = None
) -> list[Outcome]:
    """Run a group's members, together where they can be (see the module docstring); one outcome each."""
    cache = cache or DataCache()
    outcomes: dict[str, Outcome] = {}
    ready: list[Prepared] = []
    for item in group.members:
        job = prepare(item, on_event, rss_scope, cache)
        if isinstance(job, Outcome):
            outcomes[item.key] = job
        else:
            ready.append(job)
    by_size: dict[tuple[int, int], list[Prepared]] = {}
    for job in ready:
        train = job.task.train
        by_size.setdefault((len(train), len(train.normal)), []).append(job)
    for jobs in by_size.values():
        for job, outcome in zip(jobs, _fit_together(jobs), strict=True):
            outcomes[job.item.key] = outcome
    return [outcomes[item.key] for item in group.members]


def _fit_together(jobs: list[Prepared]) -> list[Outcome]:
    cls = jobs[0].cls
    if len(jobs) > 1:
        tasks: list[FitTask] = [job.fit_task for job in jobs]
        ctxs: list[FitContext] = [job.ctx for job in jobs]
        try:  # fit_group seeds each member's network itself
            start = time.perf_counter()
            methods = cls.fit_group([job.params for job in jobs], tasks, ctxs)
            seconds = time.perf_counter() - start
        except TrainingDiverged:
            methods = None  # the stacked step overflowed: each member's solo run says where it stops
        except Exception as err:
            return [failed(job.item, {**job.record, "group_size": len(jobs)}, err) for job in jobs]
        if methods is not None:
            return [_member_outcome(job, method, seconds, len(jobs)) for job, method in zip(jobs, methods, strict=True)]
    return [_alone(job) for job in jobs]


def _member_outcome(job: Prepared, method: Method | Exception, seconds: float, size: int) -> Outcome:
    if isinstance(method, TrainingDiverged):
        return _alone(job)  # the group saw it diverge; its solo run says where and why
    if isinstance(method, Exception):
        return failed(job.item, {**job.record, "group_size": size}, method)
    return finish(job, method, seconds / size, group_size=size, group_fit_seconds=seconds)


def _alone(job: Prepared) -> Outcome:
    """``job`` fitted on its own, as a solo job (the group's epochs leave its history)."""
    job.record["history"].clear()
    return fit_solo(job)
