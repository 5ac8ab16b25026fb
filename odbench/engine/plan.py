"""Planning a suite: methods x datasets x normal classes x repetitions, as jobs.

Every user mistake (unknown name, class, option, device) raises here, before
anything runs.  A :class:`Job`'s key covers everything that decides its
numbers, so the store doubles as the resume cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from odbench.core.contracts import SCORINGS, DataInfo, Dataset
from odbench.core.errors import UsageError  # re-exported: callers import it from here too
from odbench.core.seeding import derive_seed
from odbench.engine.fingerprint import code_fingerprint
from odbench.engine.identity import data_identity, job_key
from odbench.engine.loading import DataCache
from odbench.engine.registry import Registry
from odbench.protocols import Protocol, ProtocolError, get_protocol
from odbench.protocols.splits import resolve_class

SELECTIONS = ("val", "oracle")
#: repetitions of one task, at most: a split and a fit each, far beyond any paper's (5 to 10)
MAX_REPETITIONS = 10_000
#: jobs in one plan, at most: each is held in memory while the suite runs (a bigger one is several suites)
MAX_PLAN_JOBS = 200_000


@dataclass(frozen=True)
class Job:
    """One (method, dataset, normal class, repetition) cell of a suite.

    ``params`` are the user's parameters, checked against the method's
    declaration; the defaults are merged in when the task is built
    (``Method.resolve_params``).  ``normal_class`` is ``None`` for protocols
    with a single task (``contamination``).
    """

    method: str
    dataset: str
    protocol: str
    normal_class: str | None
    repetition: int
    base_seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    protocol_options: dict[str, Any] = field(default_factory=dict)
    selection: str = "val"
    #: the Optuna study whose best parameters these are (``odbench tune``); not part of the key
    study: str | None = field(default=None, compare=False)
    #: how scores are read (``odbench.deep.scoring_modes``): "eval", or an authors' mode that only an
    #: experiment variant sets (``odbench reproduce ocln-mnist --variant edgeml``)
    scoring: str = "eval"

    @property
    def seed(self) -> int:
        """The job's seed: a function of (base seed, dataset, protocol, normal class, repetition)."""
        return derive_seed(self.base_seed, self.dataset, self.protocol, self.normal_class, self.repetition)

    @property
    def label(self) -> str:
        cls = "" if self.normal_class is None else f"/{self.normal_class}"
        return f"{self.method} on {self.dataset}{cls} rep {self.repetition}"

    def key(
        self, registry: Registry, cache: DataCache | None = None, code: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> str:  # fmt: skip
        """The store key (``odbench.engine.identity``): what decides this job's numbers.

        ``cache`` (the plan's) spares re-reading a user file for its hash.
        ``code`` and ``params``: this job's code fingerprint and key parameters
        when the caller has them already (:func:`plan_keys`).
        """
        dataset = cache.dataset(registry, self.dataset) if cache else registry.dataset(self.dataset)
        if params is None:
            params = registry.method(self.method).key_params(self.params)
        return job_key(
            method=self.method,
            params=params,
            dataset=self.dataset,
            protocol=self.protocol,
            protocol_options=self.protocol_options,
            normal_class=self.normal_class,
            repetition=self.repetition,
            base_seed=self.base_seed,
            selection=self.selection,
            scoring=self.scoring,
            code=code if code is not None else str(job_code(registry, self)["code"]),
            data=data_identity(dataset),  # a user's csv:, npz:, folder: file; a trusted unverified copy
        )


def plan_keys(registry: Registry, jobs: Sequence[Job], cache: DataCache | None = None) -> list[str]:
    """Each job's key, in order: :meth:`Job.key`, with the code fingerprint read once per (method, dataset)
    and the key parameters once per (method, parameters).

    Fingerprinting walks every module both plugin files import (about a
    millisecond a job, most of a key): once per pair, a resume of 10,000
    jobs makes its keys in seconds, and all of them from one reading of the code.
    """
    codes: dict[tuple[str, str], str] = {}
    resolved: dict[tuple[str, str], dict[str, Any]] = {}
    keys = []
    for job in jobs:
        pair = (job.method, job.dataset)
        if pair not in codes:
            codes[pair] = str(job_code(registry, job)["code"])
        given = (job.method, repr(sorted(job.params.items())))  # repr: a tuple and a list stay apart
        if given not in resolved:
            resolved[given] = registry.key_params(job.method, job.params)
        keys.append(job.key(registry, cache, code=codes[pair], params=resolved[given]))
    return keys


def job_code(registry: Registry, job: Job) -> dict[str, object]:
    """The code fingerprint of a job: its two plugin files, what they import, the job runner, library versions."""
    files = [registry.check("method", job.method).file, registry.check("dataset", job.dataset).file]  # nothing imported
    return code_fingerprint(*(Path(f) for f in files if f))


@dataclass
class Plan:
    """The jobs of a suite, notes on the pairs left out (and why), and the data read while planning.

    ``cache`` holds what planning loaded (a user's file, to learn its classes),
    so the keys and a sequential run reuse it instead of reading again.
    """

    jobs: list[Job]
    notes: list[str] = field(default_factory=list)
    cache: DataCache = field(default_factory=DataCache, repr=False, compare=False)


def _planning_info(dataset: Dataset, cache: DataCache) -> DataInfo:
    """What planning knows of a dataset without loading it: modality and network, for data-dependent defaults.

    A user's file is loaded while planning anyway, so its example shape is real; elsewhere the shape is
    unknown (one feature), which moves size-derived defaults (DROCC's radius) but none that a method's
    ``validate`` compares (epochs, CE-only epochs); the job checks its real parameters again.
    """
    shape = tuple(cache.load(dataset).X.shape[1:]) if dataset.takes_argument else (1,)
    return DataInfo(dataset=dataset.id, modality=dataset.modality, shape=shape, n_train=0, backbone=dataset.backbone)


def expand(
    registry: Registry,
    methods: Sequence[str],
    datasets: Sequence[str],
    *,
    protocol: str | None = None,
    classes: Sequence[str] | None = None,
    repetitions: int = 1,
    base_seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
    protocol_options: dict[str, Any] | None = None,
    selection: str = "val",
    cache: DataCache | None = None,
    scoring: str = "eval",
) -> Plan:
    """Every job of methods x datasets x normal classes x repetitions.

    ``protocol`` overrides each dataset's default.  ``classes`` restricts the
    normal classes of per-class protocols (default: all classes); a class a
    dataset lacks is a :class:`ProtocolError`.  ``params`` maps a method name
    to its user parameters.  Pairs a method cannot run (modality) are left
    out with a note.  Raises before anything runs on any user mistake.
    """
    checked = check_parameters(registry, methods, params, repetitions=repetitions, selection=selection, scoring=scoring)
    plan = Plan(jobs=[], cache=cache or DataCache())
    for dataset_id in datasets:
        dataset = plan.cache.dataset(registry, dataset_id)
        proto = dataset_protocol(dataset, protocol, classes, plan.cache)
        options = proto.check_options(dict(protocol_options or {}))  # unknown names and bad values, typed as declared
        normal_classes = choose_classes(proto, dataset, classes, plan)
        check_pairing(proto, dataset, normal_classes[0], base_seed, options, plan.cache)
        for method in methods:
            if method_fits(registry, method, dataset, scoring, plan):
                given = dict(checked.get(method, {}))
                template = Job(method, dataset.id, proto.name, None, 0, base_seed, given, options, selection, scoring=scoring)
                if len(plan.jobs) + len(normal_classes) * repetitions > MAX_PLAN_JOBS:
                    raise UsageError(
                        f"the suite would hold more than {MAX_PLAN_JOBS} jobs ({len(normal_classes)} classes x "
                        f"{repetitions} repetitions of {method} on {dataset.id} alone); run it as several smaller suites"
                    )
                plan.jobs += emit_jobs(template, normal_classes, repetitions)
    return plan


def check_parameters(
    registry: Registry,
    methods: Sequence[str],
    params: dict[str, dict[str, Any]] | None,
    *,
    repetitions: int,
    selection: str,
    scoring: str,
) -> dict[str, dict[str, Any]]:
    """The user's parameters per method, checked against each method's declaration, and the suite's settings.

    Unknown names and values that cannot be the declared type fail here,
    from the plugin index (no plugin imported).  Combinations a method
    refuses (``Method.validate``) are checked by :func:`validate_jobs`, for the
    jobs that will run.
    """
    if not 1 <= repetitions <= MAX_REPETITIONS:
        raise UsageError(f"repetitions must be from 1 to {MAX_REPETITIONS} (got {repetitions})")
    if selection not in SELECTIONS:
        raise UsageError(f"unknown selection {selection!r}; known: {', '.join(SELECTIONS)}")
    if scoring not in SCORINGS:
        raise UsageError(f"unknown scoring {scoring!r}; known: {', '.join(SCORINGS)}")
    for name in params or {}:
        if name not in methods:
            registry.get("method", name)  # an unknown name says what exists
            raise UsageError(f"--param given for method {name!r}, which is not in this suite")
    return {name: registry.check_params(name, given) for name, given in (params or {}).items()}


def validate_jobs(registry: Registry, jobs: Sequence[Job], cache: DataCache) -> None:
    """Each method's own checks across the user's parameters (``Method.validate``), once per method, dataset and
    parameters, with the defaults the dataset gives (tabular DROCC: 50 CE-only epochs).

    Called for the jobs about to run, before any is claimed: a method's
    checks import its code (torch, for a deep one), which a resume that finds
    every job done never needs; a stored job passed these checks when it was
    planned (its key holds its parameters and the code that checked them).
    """
    seen: set[tuple[str, str, str]] = set()
    for job in jobs:
        pair = (job.method, job.dataset, repr(sorted(job.params.items())))
        if not job.params or pair in seen:
            continue
        seen.add(pair)
        cls = registry.method(job.method)
        dataset = cache.dataset(registry, job.dataset)
        cls.validate({**cls.default_params(_planning_info(dataset, cache)), **job.params})


def dataset_protocol(dataset: Dataset, protocol: str | None, classes: Sequence[str] | None, cache: DataCache) -> Protocol:
    """The protocol the dataset's jobs follow: ``protocol``, else the dataset's default.

    A user's file is read here: its data decide its classes and default
    protocol.  A class its folder names lack fails first, before an image folder
    is decoded (minutes).
    """
    if dataset.takes_argument and classes and get_protocol(protocol or dataset.default_protocol).per_class:
        peeked: tuple[str, ...] = getattr(dataset, "classes_before_loading", tuple)()  # an image folder's sub-folders
        for c in classes if peeked else ():
            resolve_class(c, peeked, dataset.id)
    if dataset.takes_argument:
        cache.load(dataset)
    return get_protocol(protocol or dataset.default_protocol)


def choose_classes(proto: Protocol, dataset: Dataset, classes: Sequence[str] | None, plan: Plan) -> list[str | None]:
    """The normal classes the dataset's jobs take under ``proto`` (``[None]``: a single-task protocol).

    ``classes``: names or ids the user asked for (default every class, or
    the dataset's ``default_classes``); one the dataset lacks fails here.
    """
    if not proto.per_class:
        if classes:
            plan.notes.append(f"--classes does not apply to {dataset.id} ({proto.name} has a single task)")
        return [None]
    known = list(dataset.classes) or list(plan.cache.load(dataset).class_names)
    normal_classes: list[str | None] = list(proto.normal_classes(dataset, tuple(known)))
    if classes:
        wanted = {resolve_class(c, known, dataset.id) for c in classes}  # names or ids
        normal_classes = [c for c in known if c in wanted]
    elif default_classes := getattr(dataset, "default_classes", None):  # e.g. Speech Commands: 'marvin'
        normal_classes = [c for c in normal_classes if c in default_classes]
    return normal_classes


def check_pairing(
    proto: Protocol, dataset: Dataset, first_class: str | None, base_seed: int, options: dict[str, Any], cache: DataCache
) -> None:
    """A protocol other than the dataset's own builds one task now, so a mismatch fails before anything runs."""
    if proto.name == dataset.default_protocol:
        return
    try:
        proto.make_task(cache.load(dataset), dataset, first_class, base_seed, **options)
    except NotImplementedError as err:  # e.g. no close-negative generator for ocln
        raise ProtocolError(f"protocol {proto.name!r} cannot run on {dataset.id!r}: {err}") from None


def method_fits(registry: Registry, method: str, dataset: Dataset, scoring: str, plan: Plan) -> bool:
    """Whether ``method`` runs on ``dataset``: a modality it lacks leaves the pair out with a note.

    A scoring mode it cannot read is an error.  Read from the method's
    declarations (nothing imported); its parameters meet this data's
    defaults in :func:`validate_jobs`.
    """
    plugin = registry.check("method", method)
    if scoring != "eval" and not plugin.deep:  # the mode reads a network's BatchNorm
        raise UsageError(f"scoring {scoring!r} reads a network's BatchNorm; {method} has no network")
    if dataset.modality not in plugin.modalities:
        plan.notes.append(f"skipping {method} on {dataset.id}: it accepts {', '.join(plugin.modalities)}, not {dataset.modality}")
        return False
    return True


def emit_jobs(template: Job, normal_classes: Sequence[str | None], repetitions: int) -> list[Job]:
    """``template`` once per normal class and repetition, classes first."""
    return [
        replace(template, normal_class=c, repetition=r, params=dict(template.params))
        for c in normal_classes
        for r in range(repetitions)
    ]
