"""The Ray executor: every job a Ray task that declares its resources; Ray schedules and packs GPUs, the driver retries.

Workers may sit on other machines, so they write nothing: a task returns its
:class:`Outcome` with the record and arrays, and the driver (this process)
writes them to the store atomically, as the local executors' workers do.

Whatever is lost, the suite finishes.  A job whose worker, node or result is
lost runs again elsewhere, up to ``max_retries`` times, and the log names the
node, its address and the jobs retried (Ray retries nothing itself, so no
rerun goes unsaid); when the retries are spent the driver records the job as
failed with Ray's reason (``WorkerCrashedError``), so the next run retries it.
The one helper actor (job events, and where each attempt started) lives on
the driver's node and is restarted if its process dies.  A job out of GPU
memory runs once more alone on a whole GPU; a job past ``job_timeout`` is
stopped and recorded failed.

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
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from odbench.core.contracts import Dataset, LabeledData, Method
from odbench.core.download import using_data_dirs
from odbench.engine.devices import available_cores, bound_gpu_memory, gpu_out_of_memory, ran_on
from odbench.engine.execute import TIMED_OUT, EventCallback, JobEvent, Outcome, WorkItem, crashed
from odbench.engine.grouping import GroupItem, Item, run_item
from odbench.engine.loading import DataCache
from odbench.engine.plan import UsageError
from odbench.engine.store import FAILED, Store

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


class _Mailbox:
    """A Ray actor on the driver's node: job events (progress, live MLflow) and where each attempt started.

    It lives where the driver lives (a node's loss can take the driver's own
    helpers with it otherwise) and restarts if its process dies; what it held
    then is lost, never the jobs.
    """

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.placements: list[tuple[str, dict[str, Any]]] = []

    def put(self, event: JobEvent) -> None:
        self.events.append(event)

    def placed(self, token: str, where: dict[str, Any]) -> None:
        self.placements.append((token, where))

    def take(self) -> tuple[list[JobEvent], list[tuple[str, dict[str, Any]]]]:
        taken = self.events, self.placements
        self.events, self.placements = [], []
        return taken


def _members(item: Item) -> tuple[WorkItem, ...]:
    return item.members if isinstance(item, GroupItem) else (item,)


def _detached(item: Item) -> Item:
    """The item with writing left to the driver (``WorkItem.write``)."""
    if isinstance(item, GroupItem):
        return GroupItem(tuple(replace(m, write=False) for m in item.members))
    return replace(item, write=False)


def item_gpu_share(member_share: float, item: Item) -> float:
    """The GPU share an item declares: a seed group of K members holds K members' memory at once, so K times one
    member's share, at most a whole GPU."""
    return min(1.0, member_share * len(_members(item)))


def _run_job(
    item: Item, data: LabeledData | None, mailbox: Any, events: bool, threads: int, token: str, gpus: float
) -> list[Outcome]:
    """One job (or seed group) in a Ray worker process, on its declared CPUs as torch threads, its GPU memory
    bounded by its share; returns the outcomes with their arrays, writes nothing."""
    import ray

    global _WORKER_CACHE
    first = _members(item)[0]
    here = {**ran_on(), "node_id": ray.get_runtime_context().get_node_id(), "gpu_share": gpus}
    # first thing, and waited for: the driver knows where this attempt runs before the job can be lost there
    with contextlib.suppress(ray.exceptions.RayError):  # a mailbox restarting: the job runs all the same
        ray.get(mailbox.placed.remote(token, {**here, "ip": ray.util.get_node_ip_address()}), timeout=10)
    for name, value in item.env:  # the driver's data and plugin settings
        os.environ[name] = value
    bound_gpu_memory(first.device, gpus)
    if _WORKER_CACHE is None:
        _WORKER_CACHE = DataCache()
    cache = _WORKER_CACHE
    if data is not None:  # kept under the data folders the job is prepared with (``WorkItem.data_dirs``)
        with using_data_dirs(first.data_dirs) if first.data_dirs is not None else contextlib.nullcontext():
            cache.adopt(cache.dataset(cache.registry(first.plugin_dirs), first.job.dataset), data)

    def forward(event: JobEvent) -> None:
        mailbox.put.remote(event)  # fire and forget: an actor keeps one caller's order

    outcomes = run_item(item, forward if events else None, rss_scope="process", cache=cache, threads=threads)
    for outcome in outcomes:
        if outcome.record is not None:
            outcome.record["ran_on"] = here
    return outcomes


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


def _answers(node: dict[str, Any] | None) -> bool:
    """Whether a node is up: Ray's control store says so and its raylet takes a connection.  The store learns of
    a killed node only after its health checks fail (seconds later), while its jobs' owner learns at once."""
    if node is None or not node.get("Alive", False):
        return False
    try:
        socket.create_connection((node["NodeManagerAddress"], int(node["NodeManagerPort"])), timeout=2).close()
    except (OSError, KeyError, ValueError):
        return False
    return True


def _reason(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:3])[:500] or type(err).__name__


#: Ray's errors that say the job's worker, node or result was lost, not that the job failed: it runs again elsewhere
_LOST = (
    "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError",
    "RaySystemError", "OutOfMemoryError", "ActorUnavailableError", "ActorDiedError",
)  # fmt: skip


@dataclass
class _Attempt:
    """One submission of an item: its retry count, the GPU share it declared, and where it started (once known)."""

    item: Item
    retry: int
    gpus: float
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float | None = None  # the driver's clock when it heard the attempt start
    where: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False

    @property
    def labels(self) -> str:
        return ", ".join(member.job.label for member in _members(self.item))


def _warn(message: str) -> None:
    print(f"odbench: {message}", file=sys.stderr, flush=True)


class RayExecutor:
    """Jobs as Ray tasks on a local Ray (started here) or a cluster (``address``).

    ``num_cpus`` bounds a local Ray (default: every core); it is ignored on a
    cluster.  ``threads``: the CPUs each job declares, and so its torch
    threads (default 1: Ray packs one job per core).  ``gpu_per_job`` overrides :func:`gpu_share` for every job that
    uses the GPU.  ``max_retries`` (``--retries``): how often a job whose worker, node or result was lost runs
    again, each loss named on ``warn``.  A job that ran out of GPU memory runs once more alone on a whole GPU.
    ``job_timeout`` (``--job-timeout``, seconds from its start; a seed group of K jobs gets K times as long): a job
    past it is stopped and recorded failed, not retried.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        gpu_per_job: float | None = None,
        max_retries: int = 2,
        job_timeout: float | None = None,
        cache: DataCache | None = None,
        threads: int | None = None,
        warn: Callable[[str], None] = _warn,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.gpu_per_job = gpu_per_job
        self.max_retries = max_retries
        self.job_timeout = job_timeout
        self.threads = threads or 1
        self.cache = cache or DataCache()
        self.warn = warn
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

    def declared_gpus(self, item: Item) -> float:
        """The GPU share ``item`` asks Ray for: its method's and dataset's share per member (:func:`gpu_share`),
        times its members (:func:`item_gpu_share`)."""
        first = _members(item)[0]
        registry = self.cache.registry(first.plugin_dirs)
        member = gpu_share(registry.method(first.job.method), self.cache.dataset(registry, first.job.dataset), first.device, self.gpu_per_job)
        return item_gpu_share(member, item)

    def run(self, items: Sequence[Item], on_event: EventCallback | None = None) -> Iterator[Outcome]:
        if not items:
            return
        ray = self.connect()
        store = Store(_members(items[0])[0].store_root)
        self._ray, self._task = ray, ray.remote(_run_job)
        self._mailbox, self._events = self._new_mailbox(ray), on_event is not None
        self._arrays = self._shared_arrays(ray, [_members(item)[0] for item in items])
        self._pending: dict[Any, _Attempt] = {}
        for item in items:
            self._submit(_Attempt(item, 0, self.declared_gpus(item)))
        try:
            while self._pending:
                finished, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0.2)
                self._drain(on_event)
                self._stop_overdue()
                lost: dict[str, list[_Attempt]] = {}
                for ref in finished:
                    attempt = self._pending.pop(ref)
                    for outcome in self._outcomes(ref, attempt, lost):
                        outcome.write_to(store)
                        yield outcome
                self._retry_lost(lost)
            self._drain(on_event)
        finally:
            for ref in self._pending:  # Ctrl-C or a consumer that stopped early: nothing keeps running
                ray.cancel(ref, force=True)
            with contextlib.suppress(Exception):
                ray.kill(self._mailbox)
            self.close()

    def _new_mailbox(self, ray: Any) -> Any:
        """The helper actor, pinned to this driver's node (which cannot be lost without the driver) and restarted if it dies."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        return ray.remote(_Mailbox).options(num_cpus=0, scheduling_strategy=here, max_restarts=-1, max_task_retries=-1).remote()

    def _submit(self, attempt: _Attempt) -> None:
        first = _members(attempt.item)[0]
        # Ray retries nothing itself (max_retries=0): every retry here is counted and named in the log
        ref = self._task.options(num_cpus=self.threads, num_gpus=attempt.gpus, max_retries=0).remote(
            _detached(attempt.item), self._arrays[first.job.dataset], self._mailbox, self._events, self.threads, attempt.token,
            attempt.gpus,
        )  # fmt: skip
        self._pending[ref] = attempt

    def _drain(self, on_event: EventCallback | None) -> None:
        """Take the mailbox's news: events to ``on_event``, placements to their attempts.  A mailbox restarting
        is waited for at the next turn; a mailbox gone for good is replaced (the news it held is lost, no job is)."""
        ray = self._ray
        try:
            events, placements = ray.get(self._mailbox.take.remote(), timeout=30)
        except ray.exceptions.ActorDiedError:
            self.warn("the progress mailbox died; a new one takes over (events of running jobs may be missing)")
            self._mailbox = self._new_mailbox(ray)
            return
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            return
        by_token = {attempt.token: attempt for attempt in self._pending.values()}
        now = time.monotonic()
        for token, where in placements:
            if token in by_token:
                by_token[token].started, by_token[token].where = now, where
        if on_event is not None:
            for event in events:
                on_event(event)

    def _stop_overdue(self) -> None:
        """Cancel (kill) every attempt running longer than ``job_timeout`` per member since it started."""
        if self.job_timeout is None:
            return
        now = time.monotonic()
        for ref, attempt in self._pending.items():
            bound = self.job_timeout * len(_members(attempt.item))
            if attempt.started is not None and not attempt.timed_out and now - attempt.started > bound:
                attempt.timed_out = True
                self._ray.cancel(ref, force=True)

    def _outcomes(self, ref: Any, attempt: _Attempt, lost: dict[str, list[_Attempt]]) -> list[Outcome]:
        """The outcomes of a finished attempt to write now; a lost attempt joins ``lost`` (by node) instead, and
        a member out of GPU memory is submitted again alone on a whole GPU."""
        ray = self._ray
        try:
            outcomes: list[Outcome] = ray.get(ref)
        except ray.exceptions.RayError as err:
            if attempt.timed_out:
                bound = self.job_timeout * len(_members(attempt.item)) if self.job_timeout else 0
                why = f"stopped after {bound:g} s (--job-timeout {self.job_timeout:g} s per job)"
                return self._crashed(attempt, why, TIMED_OUT)
            if type(err).__name__ in _LOST and attempt.retry < self.max_retries:
                lost.setdefault(attempt.where.get("node_id") or "?", []).append(attempt)
                self._last_error = err
                return []
            retries = f"after {attempt.retry} retries" if attempt.retry else "not retried: --retries 0" if not self.max_retries else "no retry"
            return self._crashed(attempt, f"{_reason(err)} ({retries})", type(err).__name__)
        kept = []
        for outcome in outcomes:
            record = outcome.record
            if record is not None and record["status"] == FAILED and attempt.gpus > 0 and gpu_out_of_memory(record["error"]):
                member = next(m for m in _members(attempt.item) if m.key == outcome.key)
                if attempt.gpus < 1.0 or len(_members(attempt.item)) > 1:
                    self.warn(f"{member.job.label} ran out of GPU memory on {attempt.gpus:g} GPU; running it again alone on a whole GPU")
                    self._submit(_Attempt(member, attempt.retry, 1.0))
                    continue
                record["error"]["message"] = f"out of GPU memory alone on a whole GPU: {record['error']['message']}"
                outcome.note = f"{record['error']['type']}: {record['error']['message']}"
            kept.append(outcome)
        return kept

    def _crashed(self, attempt: _Attempt, why: str, kind: str) -> list[Outcome]:
        """Failed records for every member of an attempt that returned none, saying where it ran when that is known."""
        outcomes = [crashed(member, why, kind) for member in _members(attempt.item)]
        for outcome in outcomes:
            if outcome.record is not None:
                outcome.record["ran_on"] = {**attempt.where, "gpu_share": attempt.gpus}  # the attempt's, not the driver's
        return outcomes

    def _retry_lost(self, lost: dict[str, list[_Attempt]]) -> None:
        """Submit lost attempts again, saying per node whether the node is gone or only the job's worker died."""
        if not lost:
            return
        nodes = {node["NodeID"]: node for node in self._ray.nodes()}
        for node_id, attempts in lost.items():
            first = attempts[0].where
            ip = first.get("ip", "address unknown")
            jobs = "; ".join(attempt.labels for attempt in attempts)
            if node_id == "?":
                self.warn(f"jobs lost before they started on a node ({type(self._last_error).__name__}); retrying jobs {jobs}")
            elif _answers(nodes.get(node_id)):
                pids = ", ".join(str(a.where.get("pid")) for a in attempts)
                self.warn(f"node {node_id} ({ip}): worker {pids} lost; retrying jobs {jobs}")
            else:
                self.warn(f"node {node_id} ({ip}) lost; retrying jobs {jobs}")
            for attempt in attempts:
                self._submit(_Attempt(attempt.item, attempt.retry + 1, attempt.gpus))
