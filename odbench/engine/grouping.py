"""Seed groups: which work items train together, and running one group.

Jobs of a method whose own class sets ``supports_seed_groups`` (a subclass
says so again: it may have changed the loss) and that differ only in
their repetition (same method, dataset, protocol and options, normal class,
parameters, selection, base seed, device) form a :class:`GroupItem` of up
to ``max_size`` members.  Once their tasks are built, the members whose
training splits have one size (one batch schedule) are fitted together by
``Method.fit_group``; each is then scored and written as its own record
with the same code as a solo job (``odbench.engine.execute``), marked with
``group_size``.  Where the method declines (``fit_group`` returns ``None``),
a member is alone in its size, or the group's training diverges, the
members run one by one, exactly as solo jobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from odbench.core.contracts import FitContext, FitTask, Method
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
)
from odbench.engine.loading import DataCache
from odbench.engine.registry import Registry

#: most jobs in one group: the members' memory adds up, and a pool spreads groups over its workers
MAX_GROUP = 16


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
        if not opted_in(registry.method(item.job.method)):
            order.append(item)
            continue
        key = _compatibility(item)
        if key not in open_groups or len(open_groups[key]) >= max_size:  # a full group starts another
            open_groups[key] = []
            order.append(open_groups[key])
        open_groups[key].append(item)
    return [
        entry if isinstance(entry, WorkItem) else entry[0] if len(entry) == 1 else GroupItem(tuple(entry))
        for entry in order
    ]


def opted_in(cls: type[Method]) -> bool:
    """Whether ``cls`` itself sets ``supports_seed_groups``: a subclass may change the loss, so it is not inherited."""
    return bool(vars(cls).get("supports_seed_groups", False))


def _compatibility(item: WorkItem) -> str:
    """Everything of a work item but its repetition (and so its seed and key)."""
    job = item.job
    fields = [
        job.method, job.dataset, job.protocol, job.normal_class, job.base_seed, job.params, job.protocol_options,
        job.selection, item.store_root, item.device, item.plugin_dirs, item.env,
    ]  # fmt: skip
    return json.dumps(fields, sort_keys=True, default=repr)


def run_item(
    item: Item, on_event: EventCallback | None = None, rss_scope: str = "process", cache: DataCache | None = None
) -> list[Outcome]:
    """The outcomes of one item: one for a job, one per member for a group."""
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
    from odbench.deep.training import TrainingDiverged  # here: a suite of classical methods never loads torch

    if len(jobs) > 1:
        tasks: list[FitTask] = [job.fit_task for job in jobs]
        ctxs: list[FitContext] = [job.ctx for job in jobs]
        try:  # fit_group seeds each member's network itself
            start = time.perf_counter()
            methods = cls.fit_group(jobs[0].params, tasks, ctxs)
            seconds = time.perf_counter() - start
        except TrainingDiverged:
            methods = None  # each member's solo run says where it stops
        except Exception as err:
            return [failed(job.item, {**job.record, "group_size": len(jobs)}, err) for job in jobs]
        if methods is not None:
            return [
                finish(job, method, seconds / len(jobs), group_size=len(jobs), group_fit_seconds=seconds)
                for job, method in zip(jobs, methods, strict=True)
            ]
    for job in jobs:  # one by one, as solo jobs
        job.record["history"].clear()
    return [fit_solo(job) for job in jobs]
