"""The contracts between the engine and its plugins.

Conventions kept by every file of odbench:

* In a :class:`Split`, label ``0`` is normal (the paper's positive class) and
  ``1`` is anomalous.
* ``Method.anomaly_score(X)`` returns shape ``(n,)``; **higher = more
  anomalous**.  A method whose model says "higher = normal" negates at its own
  boundary, never in the caller.
* A dataset plugin knows how to fetch and load arrays and class ids; only a
  protocol (``odbench.protocols``) turns class ids into normal/anomalous.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import numpy as np

from odbench.core.download import DataUnavailable, RemoteFile, fetch, locate
from odbench.core.params import NoParams, check, declared_defaults, instantiate, specs

if TYPE_CHECKING:  # optuna is imported lazily: plugins need not load it
    import optuna

#: Modalities a dataset can declare and a method can accept.
MODALITIES = ("tabular", "image", "sequence")

NORMAL, ANOMALY = 0, 1


class DataError(ValueError):
    """The user's data cannot be used as given; the message says how to fix it."""


@dataclass(frozen=True)
class LabeledData:
    """What a dataset plugin returns: arrays and original class ids.

    ``X``/``y`` is the pool a protocol cuts train/validation from (the
    official training set where one exists).  ``X_test``/``y_test`` is the
    official test set, or ``None`` when the protocol must cut one itself.
    ``y`` holds indices into ``class_names``.  ``anomaly_classes`` names the
    class ids that the dataset itself calls anomalous (tabular outlier sets);
    it is empty for multi-class data used one-vs-all.
    """

    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    anomaly_classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} rows but y has {len(self.y)}")
        if (self.X_test is None) != (self.y_test is None):
            raise ValueError("X_test and y_test must be given together")
        if self.X_test is not None and self.y_test is not None and len(self.X_test) != len(self.y_test):
            raise ValueError(f"X_test has {len(self.X_test)} rows but y_test has {len(self.y_test)}")


@dataclass(frozen=True)
class Split:
    """One part of a task.  ``y``: 0 normal, 1 anomalous (``None`` = unlabeled).

    ``index`` holds the row numbers in the source arrays (the pool, or the
    official test set for a test split) so a job can record exactly which
    points it used.  ``close`` marks generated close negatives (OCLN tests).
    """

    X: np.ndarray
    y: np.ndarray | None
    index: np.ndarray
    close: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.X)

    @property
    def normal(self) -> np.ndarray:
        """Rows labelled normal (all rows of an unlabeled split)."""
        return self.X if self.y is None else self.X[self.y == NORMAL]

    @property
    def negatives(self) -> np.ndarray:
        """Rows labelled anomalous (the limited negatives of an OCLN task)."""
        if self.y is None:
            return self.X[:0]
        return self.X[self.y == ANOMALY]


@dataclass(frozen=True)
class DataInfo:
    """What a method may know about the data before it sees any of it.

    ``shape`` is the shape of one example (``(d,)`` tabular, ``(C, H, W)``
    images, ``(T, F)`` sequences).  ``backbone`` is the dataset's default
    network from ``odbench.deep.nets``.  ``channel_mean`` / ``channel_std`` are
    the per-channel statistics that ``odbench.data.inputs.as_float`` applies
    to uint8 images at batch time (float data arrive already standardized).
    """

    dataset: str
    modality: str
    shape: tuple[int, ...]
    n_train: int
    backbone: str = "mlp"
    has_negatives: bool = False
    channel_mean: tuple[float, ...] | None = None
    channel_std: tuple[float, ...] | None = None

    @property
    def n_features(self) -> int:
        """Input dimension d (product of the example shape)."""
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class FitTask:
    """What ``fit`` receives: training and validation splits, nothing derived from test labels.

    It has no test split and no notes (those count test points), so a method
    that reads test data fails the type checker, not just a convention.
    ``oracle_test`` holds the test split only in a run the user asked to
    select its epoch on test (``--selection oracle``); every number such a
    run produces is labelled ``oracle``.
    """

    dataset: str
    protocol: str
    normal_class: str | None
    train: Split
    val: Split
    info: DataInfo
    metrics: tuple[str, ...]
    oracle_test: Split | None = None

    @property
    def headline_metric(self) -> str:
        return self.metrics[0]


@dataclass(frozen=True)
class Task:
    """Train / validation / test splits of one protocol instance (what the evaluator sees).

    ``normal_class`` is the class name treated as normal (one-vs-all), or
    ``None`` for datasets that define their anomalies themselves.
    ``metrics`` lists the metric names (``odbench.core.metrics``) the protocol
    reports; the first is its headline metric.  ``notes`` may be derived from
    test labels (metric ceilings), so they stay here: a method is fitted on
    :meth:`for_fit`'s :class:`FitTask`.
    """

    dataset: str
    protocol: str
    normal_class: str | None
    train: Split
    val: Split
    test: Split
    info: DataInfo
    metrics: tuple[str, ...]
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def headline_metric(self) -> str:
        return self.metrics[0]

    def for_fit(self, oracle: bool = False) -> FitTask:
        """What ``fit`` receives; ``oracle=True`` lends it the test split for test-set selection."""
        return FitTask(
            self.dataset, self.protocol, self.normal_class, self.train, self.val, self.info, self.metrics,
            oracle_test=self.test if oracle else None,
        )  # fmt: skip


#: how a network's scores are read (``odbench.deep.scoring_modes``): eval mode, a point's score independent of its
#: batch (every default), or BatchNorm in train mode over batches of one source each, as the DROCC authors' OCLN
#: test loop did (only an experiment variant that says so runs it)
EVAL_SCORING = "eval"
BATCHNORM_TRAIN_MODE_PER_SOURCE = "batchnorm_train_mode_per_source"
SCORINGS = (EVAL_SCORING, BATCHNORM_TRAIN_MODE_PER_SOURCE)


@dataclass
class FitContext:
    """Everything a method may use while fitting besides the task itself.

    ``on_epoch(epoch, metrics)`` receives per-epoch numbers (validation
    metric, losses) for MLflow, Optuna pruning and progress display; it may
    raise ``optuna.TrialPruned`` to stop a trial.  ``on_plan(phase, epochs, stages)``
    hears how many epochs a training phase (``"train"``, ``"pretrain"``)
    will run before its first one, so progress can show a total and an ETA;
    ``stages`` splits them where they run at different rates (DROCC's
    ``(("ce-only", 50), ("adversarial", 50))``), else is empty.
    """

    seed: int
    device: str = "cpu"
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    selection: str = "val"  # "val" (honest) or "oracle" (labelled as such)
    on_plan: Callable[[str, int, tuple[tuple[str, int], ...]], None] | None = None
    #: how a deep network's scores are read (``odbench.deep.scoring_modes``): "eval" unless an experiment variant says
    scoring: str = "eval"

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def report(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics)

    def plan(self, epochs: int, phase: str = "train", stages: tuple[tuple[str, int], ...] = ()) -> None:
        if self.on_plan is not None:
            self.on_plan(phase, epochs, stages)


class Method:
    """Base class of a method plugin (an anomaly detector).

    Subclasses set the class attributes, declare their parameters in
    ``Params``, implement ``fit`` and ``anomaly_score``, and may override
    ``data_defaults``, ``validate``, ``search_space`` and ``param_grid``.
    ``__init__`` only stores the given parameters (scikit-learn manners);
    learned state lives in attributes ending in ``_``.

    Parameters are resolved before a plugin's ``fit`` body runs, so no
    plugin can forget to: every subclass's ``fit`` is wrapped when the class
    is made (``__init_subclass__``) so that it first calls :meth:`resolve`
    for ``task.info``, then runs as written.  Inside ``fit`` (and after it)
    ``self.params`` is an instance of ``Params``: the given values over the
    declared defaults and ``data_defaults(info)``, checked; and
    ``self.runtime`` one of ``Params.Runtime``, the engineering settings
    (``odbench.core.params``).  ``dataclasses.asdict(self.params)`` is the
    method's resolved parameters as a dict; :meth:`resolved_params` adds the
    runtime settings (what the record states).  A ``fit`` that calls
    ``super().fit`` resolves once, in the outermost call.  A ``fit_group``
    calls :meth:`resolve` on each member it builds.
    """

    name: ClassVar[str]
    #: modalities the method accepts; classical methods flatten any input
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    #: True if the method needs labelled negatives in training (OCLN)
    uses_negatives: ClassVar[bool] = False
    #: True for neural methods: the engine checks batch-invariant scoring
    deep: ClassVar[bool] = False
    #: False for a method that never computes on ``FitContext.device`` (pyod's CPU detectors): an executor
    #: reserves no share of a GPU for its jobs
    uses_gpu: ClassVar[bool] = True
    #: tiny settings for the generic contract test (seconds, not minutes)
    test_params: ClassVar[dict[str, Any]] = {}
    #: import names the method needs beyond odbench's own dependencies
    requires: ClassVar[tuple[str, ...]] = ()
    #: True if the engine may hand jobs that differ only in their repetition to :meth:`fit_group` together;
    #: read from the class itself, not inherited (a subclass may change what ``fit_group`` reproduces)
    supports_seed_groups: ClassVar[bool] = False
    #: parameters in which the members of one group may differ too (tuning trials: a learning rate, a radius);
    #: read from the class itself like ``supports_seed_groups``
    group_varying: ClassVar[frozenset[str]] = frozenset()

    #: the parameter declaration (``odbench.core.params``): names, defaults, meanings, types; its ``Runtime``
    #: (optional) declares the engineering settings
    Params: ClassVar[type] = NoParams

    #: the resolved parameters, an instance of ``Params`` (set by :meth:`resolve`, before ``fit``'s body runs)
    params: Any
    #: the resolved engineering settings, an instance of ``Params.Runtime`` (set with ``params``)
    runtime: Any
    #: True while a (wrapped) ``fit`` runs, so that a ``super().fit`` inside it does not resolve again
    _fitting: bool = False

    def __init__(self, **params: Any) -> None:
        self.given_params = params

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "resolves_params", False):
            cls.fit = _resolving_first(fit)  # type: ignore[method-assign]

    def resolve(self, info: DataInfo) -> None:
        """Set ``params`` and ``runtime`` from the given parameters for data described by ``info``."""
        self.params, self.runtime = instantiate(self.Params, self.resolve_params(info, self.given_params))

    def resolved_params(self) -> dict[str, Any]:
        """What this fit ran with, the method's parameters then its runtime settings, as one dict (the record's)."""
        return {**dataclasses.asdict(self.params), **dataclasses.asdict(self.runtime)}

    def input_weights(self) -> np.ndarray | None:
        """Per-coordinate weights the fit learned for its distance (DROCC-LF's sigma, shape ``(d,)``); None: none."""
        return None

    @classmethod
    def data_defaults(cls, info: DataInfo) -> dict[str, Any]:
        """Defaults that depend on the data (e.g. DROCC's radius √d/2); declared ``None`` in ``Params``."""
        return {}

    @classmethod
    def default_params(cls, info: DataInfo) -> dict[str, Any]:
        """Every parameter's and runtime setting's default for this data: the declaration's, then ``data_defaults``."""
        return {**declared_defaults(cls.Params), **cls.data_defaults(info)}

    @classmethod
    def check_params(cls, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` with values coerced to their declared types; ``odbench.core.params.ParamError`` on a bad one."""
        return check(cls.name, cls.Params, given)

    @classmethod
    def validate(cls, params: dict[str, Any]) -> None:
        """Checks across parameters of a resolved set (e.g. CE-only epochs below epochs); raise ParamError."""

    @classmethod
    def resolve_params(cls, info: DataInfo, given: dict[str, Any]) -> dict[str, Any]:
        """The parameters and runtime settings that run, as one dict: defaults for this data under ``given`` (checked).

        The one place where defaults are merged; :meth:`resolve` (so every
        ``fit``), the engine's record and tuning all call it, so a method
        fitted directly runs with the same parameters as one run by the engine.
        """
        resolved = {**cls.default_params(info), **cls.check_params(given)}
        cls.validate(resolved)
        return resolved

    @classmethod
    def key_params(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The parameters a job key holds: ``given`` (checked) over the declared defaults, less unkeyed runtime settings.

        Defaults computed from the data are left out: they are functions of
        the code and the data, both in the key.  A runtime setting declared
        ``keyed=False`` (one that cannot change a number) is left out too,
        so changing it reuses the stored result.
        """
        unkeyed = {name for name, spec in specs(cls.Params).items() if not spec.keyed}
        return {k: v for k, v in {**declared_defaults(cls.Params), **given}.items() if k not in unkeyed}

    @classmethod
    def search_space(cls, trial: optuna.Trial, info: DataInfo) -> dict[str, Any]:
        """Parameters to try for one Optuna trial (validation data only)."""
        return {}

    @classmethod
    def param_grid(cls, info: DataInfo) -> dict[str, list[Any]] | None:
        """A finite grid for ``odbench tune --grid`` (e.g. the paper's); None: none."""
        return None

    def fit(self, task: FitTask, ctx: FitContext) -> Method:
        raise NotImplementedError

    @classmethod
    def fit_group(
        cls, params: Sequence[dict[str, Any]], tasks: Sequence[FitTask], ctxs: Sequence[FitContext]
    ) -> list[Method | Exception] | None:
        """One fitted method per (params, task, context), trained together; ``None`` when these cannot be.

        Only called when ``supports_seed_groups``, with each member's
        parameters (equal but for ``group_varying``) and tasks of one
        dataset, protocol and class (so they differ in their split and seed).
        Each method must score as its own ``cls(**params[k]).fit(tasks[k],
        ctxs[k])`` would, within float tolerance.  Where that solo fit would
        have raised from its context's ``on_epoch`` (a pruned trial), the
        member's entry is that exception and the others train on.
        """
        return None

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """Scores of shape ``(n,)``, higher = more anomalous."""
        raise NotImplementedError


_Fit = TypeVar("_Fit", bound=Callable[..., Any])


def _resolving_first(fit: _Fit) -> _Fit:
    """``fit`` that resolves the method's parameters for ``task.info`` before its body runs (once per outer call)."""

    @functools.wraps(fit)
    def resolving_fit(self: Method, task: FitTask, ctx: FitContext) -> Any:
        if self._fitting:  # a subclass's fit calling super().fit: resolved already
            return fit(self, task, ctx)
        self.resolve(task.info)
        self._fitting = True
        try:
            return fit(self, task, ctx)
        finally:
            self._fitting = False

    resolving_fit.resolves_params = True  # type: ignore[attr-defined]
    return cast(_Fit, resolving_fit)


class Dataset:
    """Base class of a dataset plugin: fetch once, then load arrays.

    ``prepare(root)`` makes the files available (download into ``root``, the
    dataset's cache folder, unless a user data directory has them; checksum);
    ``load(root)`` parses them into :class:`LabeledData`, finding each file
    with ``self.path(root, filename)``.  Neither knows about protocols.  The
    default ``prepare`` fetches ``files`` with their pinned hashes (see
    ``odbench.core.download``).
    """

    name: ClassVar[str]
    # modality, default_protocol, backbone and files are class attributes that
    # an instance may override (so not ClassVar): a user source (``csv:``,
    # ``npz:``) learns them from its file, ``adbench:NAME`` its file from NAME
    modality: str = "tabular"
    classes: ClassVar[tuple[str, ...]] = ()
    default_protocol: str = "one_vs_all"
    #: the metric the paper reports for this dataset, if any
    paper_metric: ClassVar[str | None] = None
    #: per-channel (mean, std) of uint8 images in [0, 1] units, as the
    #: paper's reference code fixes them; ``None``: fitted on the train split
    channel_stats: ClassVar[tuple[tuple[float, ...], tuple[float, ...]] | None] = None
    backbone: str = "mlp"
    files: tuple[RemoteFile, ...] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    #: True if the data ship with odbench or are generated (no download)
    bundled: ClassVar[bool] = False
    #: True if the plugin is a family selected as ``name:ARGUMENT``
    #: (``adbench:cardio``, ``csv:data.csv``); the argument reaches __init__
    takes_argument: ClassVar[bool] = False

    def __init__(self, argument: str | None = None) -> None:
        self.argument = argument

    @property
    def id(self) -> str:
        """The name a user types: ``name`` or ``name:argument``."""
        return self.name if self.argument is None else f"{self.name}:{self.argument}"

    def prepare(self, root: Path) -> None:
        for remote in self.files:
            fetch(remote, root)

    def path(self, root: Path, filename: str) -> Path:
        """The verified local copy of one of ``files`` (after ``prepare``)."""
        remote = next(f for f in self.files if f.filename == filename)
        found = locate(remote, root)
        if found is None:
            raise DataUnavailable(f"{filename} is missing; run `odbench prepare {self.name}` first")
        return found

    def load(self, root: Path) -> LabeledData:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash of the user's data for job keys (files outside odbench).

        Bundled and downloaded datasets are pinned by checksums already and
        return ``""``; sources reading a user's file return its hash, so a
        changed file never reuses stale results.
        """
        return ""

    def close_negatives(self, X_normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Hard negatives made from normal test points (OCLN); optional."""
        raise NotImplementedError(f"dataset {self.name!r} has no close-negative generator")
