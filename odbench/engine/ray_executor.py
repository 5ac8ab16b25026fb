"""The Ray executor: every job a Ray task that declares its resources; Ray schedules, retries, packs GPUs.

Workers may sit on other machines, so they write nothing: a task returns its
:class:`Outcome` with the record and arrays, and the driver (this process)
writes them to the store atomically, as the local executors' workers do.
A worker killed mid-job has written nothing; Ray runs the job again
(``max_retries``) and, when the retries are spent, the driver records the job
as failed with Ray's reason (``WorkerCrashedError``), so the next run retries it.

Built-in datasets' arrays are read once by the driver and put once into Ray's
object store; a task receives a reference and adopts the arrays into its
worker process's :class:`DataCache`, so no task pickles them and no worker
needs the data files.  User sources (``csv:PATH``) learn their modality while
reading their file, so a worker reads those itself, once per worker process:
the file must be at the same path there.

``ray`` is imported only here, and only when a suite runs on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from odbench.core.contracts import Dataset, LabeledData, Method
from odbench.core.download import using_data_dirs
from odbench.engine.devices import available_cores
from odbench.engine.execute import EventCallback, JobEvent, Outcome, WorkItem, crashed
from odbench.engine.grouping import GroupItem, Item, run_item
from odbench.engine.loading import DataCache
from odbench.engine.plan import UsageError
from odbench.engine.store import Store

#: GPU per deep job when ``--gpu-per-job`` is not given: small tabular and sequence nets pack 4 to a GPU,
#: MobileNetV2 (ImageNet) takes a whole one.  The 32x32 image LeNets pack 8: one such job is bound by
#: kernel launches and needs under 1 GB, so 8 overlap each other's gaps (docs/performance.md's GPU plan, unmeasured)
_GPU_SHARE_TABULAR, _GPU_SHARE_IMAGE, _GPU_SHARE_LARGE = 0.25, 0.125, 1.0
_LARGE_BACKBONES = ("mobilenet_v2",)

#: the worker process's datasets, kept between the jobs Ray sends it
_WORKER_CACHE: DataCache | None = None


def gpu_share(method: type[Method], dataset: Dataset, device: str, override: float | None = None) -> float:
    """The GPU fraction a job declares: none for methods that compute on the CPU (classical pyod detectors) or off the GPU."""
    if not device.startswith("cuda") or not method.uses_gpu:
        return 0.0
    if override is not None:
        return override
    if dataset.modality == "image":
        return _GPU_SHARE_LARGE if dataset.backbone in _LARGE_BACKBONES else _GPU_SHARE_IMAGE
    return _GPU_SHARE_TABULAR


class _EventBox:
    """A Ray actor holding job events until the driver takes them (progress, live MLflow)."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def put(self, event: JobEvent) -> None:
        self.events.append(event)

    def take(self) -> list[JobEvent]:
        events, self.events = self.events, []
        return events


def _members(item: Item) -> tuple[WorkItem, ...]:
    return item.members if isinstance(item, GroupItem) else (item,)


def _detached(item: Item) -> Item:
    """The item with writing left to the driver (``WorkItem.write``)."""
    if isinstance(item, GroupItem):
        return GroupItem(tuple(replace(m, write=False) for m in item.members))
    return replace(item, write=False)


def _run_job(item: Item, data: LabeledData | None, events: Any, threads: int) -> list[Outcome]:
    """One job (or seed group) in a Ray worker process, on its declared CPUs as torch threads; returns the
    outcomes with their arrays, writes nothing."""
    global _WORKER_CACHE
    first = _members(item)[0]
    for name, value in item.env:  # the driver's data and plugin settings
        os.environ[name] = value
    if _WORKER_CACHE is None:
        _WORKER_CACHE = DataCache()
    cache = _WORKER_CACHE
    if data is not None:  # kept under the data folders the job is prepared with (``WorkItem.data_dirs``)
        with using_data_dirs(first.data_dirs) if first.data_dirs is not None else contextlib.nullcontext():
            cache.adopt(cache.dataset(cache.registry(first.plugin_dirs), first.job.dataset), data)

    def forward(event: JobEvent) -> None:
        events.put.remote(event)  # fire and forget: an actor keeps one caller's order

    return run_item(item, forward if events is not None else None, rss_scope="process", cache=cache, threads=threads)


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT that nothing answers on is a usage error now; Ray itself would retry it for minutes."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise UsageError(f"no Ray cluster answers at {address} ({err}); start one with `ray start --head` or fix --ray-address") from None


def _reason(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:3])[:500] or type(err).__name__


class RayExecutor:
    """Jobs as Ray tasks on a local Ray (started here) or a cluster (``address``).

    ``num_cpus`` bounds a local Ray (default: every core); it is ignored on a
    cluster.  ``threads``: the CPUs each job declares, and so its torch
    threads (default 1: Ray packs one job per core).  ``gpu_per_job`` overrides :func:`gpu_share` for every job that
    uses the GPU.  ``max_retries``: how often Ray reruns a job whose worker died.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        gpu_per_job: float | None = None,
        max_retries: int = 2,
        cache: DataCache | None = None,
        threads: int | None = None,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.gpu_per_job = gpu_per_job
        self.max_retries = max_retries
        self.threads = threads or 1
        self.cache = cache or DataCache()
        self._started = False

    def connect(self) -> Any:
        """Join the cluster, or start a quiet local Ray (no dashboard); returns the ``ray`` module."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report
        if self.address is not None and self.address.removeprefix("ray://").split(":")[0] in ("127.0.0.1", "localhost"):
            # a head bound to the loopback: Ray on Linux would connect through the machine's address instead
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        if ray.is_initialized():
            return ray
        settings: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        _check_reachable(self.address)
        try:
            if self.address is None:
                # "local": a Ray of its own, never a cluster some `ray start` left on this machine
                ray.init("local", num_cpus=max(self.threads, self.num_cpus or available_cores()), include_dashboard=False, **settings)
            else:
                ray.init(address=self.address, **settings)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = self.address or "a local Ray"
            raise UsageError(f"cannot connect to Ray at {where} ({_reason(err)}); check --ray-address") from None
        self._started = True
        return ray

    def resolve_device(self, device: str) -> str:
        """``auto``: ``cuda`` when the cluster has a GPU; ``cuda`` on a cluster without one is a usage error."""
        gpus = self.connect().cluster_resources().get("GPU", 0)
        if device == "auto":
            return "cuda" if gpus else "cpu"
        if device.startswith("cuda") and not gpus:
            raise UsageError(f"device {device!r} asked for, but the Ray cluster has no GPU; use --device cpu or auto")
        return device

    def close(self) -> None:
        """Leave Ray if this executor joined it (a local Ray stops with it)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def _shared_arrays(self, ray: Any, items: Sequence[WorkItem]) -> dict[str, Any]:
        """One object-store copy of each built-in dataset's arrays, by dataset id."""
        refs: dict[str, Any] = {}
        for item in items:
            if item.job.dataset in refs:
                continue
            for name, value in item.env:  # the same data folders as the workers
                os.environ[name] = value
            registry = self.cache.registry(item.plugin_dirs)
            dataset = self.cache.dataset(registry, item.job.dataset)
            refs[item.job.dataset] = None if dataset.takes_argument else ray.put(self.cache.load(dataset))
        return refs

    def run(self, items: Sequence[Item], on_event: EventCallback | None = None) -> Iterator[Outcome]:
        if not items:
            return
        ray = self.connect()
        store = Store(_members(items[0])[0].store_root)
        task = ray.remote(_run_job)
        box = ray.remote(num_cpus=0)(_EventBox).remote() if on_event is not None else None
        arrays = self._shared_arrays(ray, [_members(item)[0] for item in items])
        pending: dict[Any, Item] = {}
        for item in items:
            first = _members(item)[0]
            registry = self.cache.registry(first.plugin_dirs)
            gpus = gpu_share(
                registry.method(first.job.method), self.cache.dataset(registry, first.job.dataset), first.device, self.gpu_per_job
            )
            ref = task.options(num_cpus=self.threads, num_gpus=gpus, max_retries=self.max_retries).remote(
                _detached(item), arrays[first.job.dataset], box, self.threads
            )
            pending[ref] = item
        try:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
                _drain(ray, box, on_event)
                for ref in finished:
                    item = pending.pop(ref)
                    try:
                        outcomes = ray.get(ref)
                    except ray.exceptions.RayError as err:  # the worker died (retries spent), out of memory, ...
                        why = f"{_reason(err)} (after {self.max_retries} retries)"
                        outcomes = [crashed(member, why, type(err).__name__) for member in _members(item)]
                    for outcome in outcomes:
                        outcome.write_to(store)
                        yield outcome
            _drain(ray, box, on_event)
        finally:
            for ref in pending:  # Ctrl-C or a consumer that stopped early: nothing keeps running
                ray.cancel(ref, force=True)
            if box is not None:
                ray.kill(box)
            self.close()


def _drain(ray: Any, box: Any, on_event: EventCallback | None) -> None:
    if box is None or on_event is None:
        return
    for event in ray.get(box.take.remote()):
        on_event(event)
