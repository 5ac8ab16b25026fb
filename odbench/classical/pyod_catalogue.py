"""Which pyod detectors odbench offers as ``pyod:<Name>``, known without importing pyod.

Importing ``pyod`` costs about two seconds (its ``utils`` load scikit-learn
and more), and one detector module can pull in torch, so ``odbench list``
reads this table instead: each row names a detector's module and class and
says whether it can run here as a one-class / unsupervised detector, and if
not, why.  The table is checked against the installed pyod by file, not by
import: a module missing from this pyod makes its row unavailable, and
pyod's own knowledge base (``pyod/utils/knowledge/algorithms.json``, shipped
since pyod 3) names detectors this table does not know yet.

A row's ``refused`` is a fact about the detector (supervised, another
modality, a contract check it fails), not about this machine; ``requires``
names optional packages, checked here with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PREFIX = "pyod:"

_SUPERVISED = "supervised: trains on labelled anomalies, which odbench's one-class protocols never give a detector"
_TIME_SERIES = (
    "time series: scores the windows of one long series, not each example of a set; odbench's sequence "
    "protocols score whole examples"
)
_GRAPH = "graph data: scores the nodes of a torch_geometric graph; odbench has no graph modality"
_RAW_MEDIA = "raw text, images or audio through a pretrained encoder it downloads; odbench hands detectors arrays"


def _batch(how: str) -> str:
    """A detector whose test scores depend on the rest of the test batch (odbench's contract forbids it)."""
    return f"scores a test point against the rest of its test batch ({how}), so its score depends on the batching"


def _check(what: str) -> str:
    """A detector that fails odbench's contract check (odbench.devkit.checks) at the settings named."""
    return f"fails the contract check: {what}"


@dataclass(frozen=True)
class Entry:
    """One pyod detector: where it lives, and whether odbench can run it."""

    name: str  # the class name users type after ``pyod:``
    module: str  # under ``pyod.models``
    cls: str
    deep: bool = False
    #: why it cannot run as a one-class detector on odbench's data (None: it can)
    refused: str | None = None
    #: optional packages (import names) the module needs beyond pyod's own dependencies
    requires: tuple[str, ...] = ()
    #: tiny settings for the contract test (a few epochs): seconds, not minutes
    test_params: dict[str, Any] = field(default_factory=dict)
    #: pyod scores a batch against itself (its ECDFs, its neighbours include the batch): score one point at a time
    point_by_point: bool = False
    #: parameters the data decide (declared None; the value is an attribute of DataInfo)
    from_data: dict[str, str] = field(default_factory=dict)

    @property
    def method_name(self) -> str:
        return PREFIX + self.name


def _deep(name: str, module: str, cls: str | None = None, **kw: Any) -> Entry:
    return Entry(name, module, cls or name, deep=True, **kw)


#: every detector of pyod 3.6 (``pyod/models``), in pyod's module order
# fmt: off
CATALOGUE: tuple[Entry, ...] = (
    Entry("ABOD", "abod", "ABOD"),
    _deep("AE1SVM", "ae1svm", test_params={"epochs": 2, "batch_size": 32}),
    _deep("ALAD", "alad", refused=_check("its scores change when the test set is re-batched, and it separates obvious outliers at median AUROC 0.76 (3 epochs)")),
    _deep("AnoGAN", "anogan", test_params={"epochs": 2, "epochs_query": 3}),
    Entry("AudioAE", "audio_ae", "AudioAE", deep=True, refused=_RAW_MEDIA + " (audio waveforms; needs librosa)"),
    _deep("AutoEncoder", "auto_encoder", test_params={"epoch_num": 3, "batch_size": 32}),
    Entry("CBLOF", "cblof", "CBLOF"),
    Entry("CD", "cd", "CD", refused=_batch("Cook's distance in a regression over the batch")),
    Entry("COF", "cof", "COF", refused=_batch("its neighbours come from the batch")),
    Entry("COPOD", "copod", "COPOD", point_by_point=True),
    _deep("DeepSVDD", "deep_svdd", test_params={"epochs": 5, "batch_size": 32}, from_data={"n_features": "n_features"}),
    _deep("DevNet", "devnet", refused=_SUPERVISED + " (semi-supervised: a few labelled anomalies)"),
    _deep("DIF", "dif", refused=_batch("it standardises the batch's representations with the batch's own mean and spread")),
    Entry("ECOD", "ecod", "ECOD", point_by_point=True),
    Entry("EmbeddingOD", "embedding", "EmbeddingOD", deep=True, refused=_RAW_MEDIA),
    Entry("MultiModalOD", "embedding", "MultiModalOD", deep=True, refused=_RAW_MEDIA),
    Entry("FeatureBagging", "feature_bagging", "FeatureBagging", requires=("combo",)),
    Entry("GMM", "gmm", "GMM"),
    Entry("HBOS", "hbos", "HBOS"),
    Entry("HDBSCAN", "hdbscan", "HDBSCAN", refused=_check("a new point takes its nearest training points' scores, so far-off points look normal (median AUROC 0.54 on obvious outliers)")),
    Entry("IForest", "iforest", "IForest"),
    Entry("INNE", "inne", "INNE"),
    Entry("KDE", "kde", "KDE"),
    Entry("KNN", "knn", "KNN"),
    Entry("KPCA", "kpca", "KPCA"),
    Entry("LMDD", "lmdd", "LMDD", refused=_batch("deviations from the batch's own smoothing")),
    Entry("LOCI", "loci", "LOCI", refused=_batch("its neighbourhoods come from the batch")),
    Entry("LODA", "loda", "LODA"),
    Entry("LOF", "lof", "LOF"),
    Entry(
        "LSCP", "lscp", "LSCP",
        refused="an ensemble of detector objects you pass as detector_list, which a name cannot give; "
        "build it in a plugin on odbench.api.PyodMethod",
    ),
    _deep("LUNAR", "lunar", test_params={"n_epochs": 3}),
    Entry("MAD", "mad", "MAD", refused="univariate: takes data of a single feature"),
    Entry("MCD", "mcd", "MCD"),
    _deep("MO_GAAL", "mo_gaal", refused=_check("median AUROC 0.55 on obvious outliers at pyod's defaults (draws 0.55, 0.62, 0.02)")),
    Entry("OCSVM", "ocsvm", "OCSVM"),
    Entry("PCA", "pca", "PCA"),
    Entry("QMCD", "qmcd", "QMCD", refused=_check("its fit picks the score's sign from the training data, and on clean training data it picks the wrong one (AUROC 0.00 on obvious outliers)")),
    Entry("RGraph", "rgraph", "RGraph", refused=_batch("it re-solves its representation over training data plus a block of the batch") + "; it also ranks obvious outliers as the most normal (AUROC 0.00)"),
    Entry("ROD", "rod", "ROD", refused=_batch("its centre and median are recomputed with the batch")),
    Entry("Sampling", "sampling", "Sampling"),
    _deep("SO_GAAL", "so_gaal", refused=_check("median AUROC 0.43 on obvious outliers at pyod's defaults (draws 0.43, 0.59, 0.29)")),
    # pyod ships two SO_GAAL classes; the second is the port onto its deep-learning base class
    _deep("SO_GAAL_new", "so_gaal_new", "SO_GAAL", refused=_check("median AUROC 0.88 on obvious outliers at pyod's defaults (draws 0.92, 0.76, 0.88)")),
    Entry("SOD", "sod", "SOD", refused=_batch("its reference sets are neighbours within the batch")),
    Entry("SOS", "sos", "SOS", refused=_batch("affinities among the batch's points")),
    Entry("SUOD", "suod", "SUOD", requires=("suod", "combo")),
    _deep("VAE", "vae", refused=_check("it draws fresh latent noise for every score, so scores change with the draw and the batching")),
    Entry("XGBOD", "xgbod", "XGBOD", refused=_SUPERVISED, requires=("xgboost",)),
    Entry("TimeSeriesOD", "ts_od", "TimeSeriesOD", refused=_TIME_SERIES),
    Entry("MatrixProfile", "ts_matrix_profile", "MatrixProfile", refused=_TIME_SERIES),
    Entry("SpectralResidual", "ts_spectral_residual", "SpectralResidual", refused=_TIME_SERIES),
    Entry("KShape", "ts_kshape", "KShape", refused=_TIME_SERIES),
    Entry("SAND", "ts_sand", "SAND", refused=_TIME_SERIES),
    Entry("LSTMAD", "ts_lstm", "LSTMAD", deep=True, refused=_TIME_SERIES),
    Entry("AnomalyTransformer", "ts_anomaly_transformer", "AnomalyTransformer", deep=True, refused=_TIME_SERIES),
    Entry("DOMINANT", "pyg_dominant", "DOMINANT", deep=True, refused=_GRAPH),
    Entry("CoLA", "pyg_cola", "CoLA", deep=True, refused=_GRAPH),
    Entry("CONAD", "pyg_conad", "CONAD", deep=True, refused=_GRAPH),
    Entry("AnomalyDAE", "pyg_anomalydae", "AnomalyDAE", deep=True, refused=_GRAPH),
    Entry("GUIDE", "pyg_guide", "GUIDE", deep=True, refused=_GRAPH),
    Entry("Radar", "pyg_radar", "Radar", refused=_GRAPH),
    Entry("ANOMALOUS", "pyg_anomalous", "ANOMALOUS", refused=_GRAPH),
    Entry("SCAN", "pyg_scan", "SCAN", refused=_GRAPH),
)
# fmt: on
BY_NAME: dict[str, Entry] = {e.name: e for e in CATALOGUE}


@lru_cache(maxsize=1)
def pyod_folder() -> Path | None:
    """The installed pyod package folder, found without importing pyod (None: not installed)."""
    try:
        spec = importlib.util.find_spec("pyod")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def pyod_version() -> str:
    try:
        return metadata.version("pyod")
    except metadata.PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=64)
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def unavailable(entry: Entry) -> str | None:
    """Why ``entry`` cannot run here, in one line with what to do; None when it can."""
    folder = pyod_folder()
    if folder is None:
        return "pyod is not installed (pip install pyod)"
    if not (folder / "models" / f"{entry.module}.py").is_file():
        return f"not in the installed pyod {pyod_version()} (pyod.models.{entry.module} is missing); upgrade pyod"
    missing = [m for m in entry.requires if not _installed(m)]
    needs = f"needs {', '.join(missing)} (pip install {' '.join(missing)})" if missing else None
    if entry.refused:
        return f"{entry.refused}; {needs}" if needs else entry.refused
    return needs


def unknown_to_odbench() -> list[tuple[str, str]]:
    """(name, why) for detectors the installed pyod lists in its knowledge base that this table lacks."""
    folder = pyod_folder()
    path = folder / "utils" / "knowledge" / "algorithms.json" if folder else None
    if path is None or not path.is_file():
        return []
    try:
        algorithms = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    known = {f"pyod.models.{e.module}.{e.cls}" for e in CATALOGUE}
    found = []
    for name, facts in algorithms.items():
        where = facts.get("class_path", "") if isinstance(facts, dict) else ""
        status = facts.get("status") if isinstance(facts, dict) else None
        if where and where not in known and status in ("shipped", "experimental"):
            module_file = folder / Path(*where.split(".")[1:-1]).with_suffix(".py") if folder else None
            if module_file is not None and module_file.is_file():
                found.append((name, f"new in pyod {pyod_version()} ({where}); not in odbench's table yet"))
    return found
