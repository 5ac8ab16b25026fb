"""Datasets as the engine uses them: prepared once, one instance per id, arrays loaded once per process."""

from __future__ import annotations

import os
from pathlib import Path

from odbench.core.contracts import Dataset, LabeledData
from odbench.core.download import dataset_root
from odbench.engine.registry import Registry

_DATA: dict[tuple[str, str, str], tuple[Dataset, LabeledData]] = {}
_INSTANCES: dict[tuple[str, tuple[str, ...]], Dataset] = {}
_REGISTRIES: dict[tuple[str, ...], Registry] = {}


def prepare(dataset: Dataset) -> Path:
    """Download/verify the dataset's files once; returns its cache folder."""
    root = dataset_root(dataset.name)
    dataset.prepare(root)
    return root


def dataset_instance(registry: Registry, dataset_id: str) -> Dataset:
    """One instance per dataset id and process: a source that learns its
    modality or default protocol while loading (``csv:``, ``npz:``) keeps
    what it learned, since ``load`` below runs once per process."""
    key = (dataset_id, tuple(str(d) for d in registry.plugin_dirs))
    if key not in _INSTANCES:
        _INSTANCES[key] = registry.dataset(dataset_id)
    return _INSTANCES[key]


def load(dataset: Dataset) -> LabeledData:
    """The dataset's arrays, loaded once per process (and data folder, and file content).

    A user source (``takes_argument``) learns its modality and default
    protocol from its file while loading, so each such instance loads for
    itself; built-in datasets share one copy of their arrays.
    """
    cache_key = (dataset.id, os.environ.get("ODBENCH_DATA_DIR", ""), dataset.fingerprint())
    cached = _DATA.get(cache_key)
    if cached is None or (dataset.takes_argument and cached[0] is not dataset):
        _DATA[cache_key] = (dataset, dataset.load(prepare(dataset)))
    return _DATA[cache_key][1]


def registry_for(plugin_dirs: tuple[str, ...]) -> Registry:
    if plugin_dirs not in _REGISTRIES:
        _REGISTRIES[plugin_dirs] = Registry([Path(d) for d in plugin_dirs])
    return _REGISTRIES[plugin_dirs]

