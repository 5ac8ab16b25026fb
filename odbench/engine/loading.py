"""Datasets as the engine uses them: prepared once, one instance per id, arrays kept for the next job.

A :class:`DataCache` belongs to whoever runs jobs one after another (the
planner, the sequential executor); a pool worker runs one job and needs none.
It is bounded: the arrays of only the last ``max_arrays`` datasets are kept,
so a suite over many image sets does not hold them all at once.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from odbench.core.contracts import Dataset, LabeledData
from odbench.core.download import data_dirs, dataset_root
from odbench.engine.registry import Registry


def prepare(dataset: Dataset) -> Path:
    """Download/verify the dataset's files once; returns its cache folder."""
    root = dataset_root(dataset.name)
    dataset.prepare(root)
    return root


def load(dataset: Dataset) -> LabeledData:
    """The dataset's arrays, prepared and loaded now (no cache)."""
    return dataset.load(prepare(dataset))


class DataCache:
    """Registries, dataset instances and loaded arrays, kept between the jobs of one owner."""

    def __init__(self, max_arrays: int = 2) -> None:
        self.max_arrays = max_arrays
        self._registries: dict[tuple[str, ...], Registry] = {}
        self._instances: dict[tuple[str, tuple[str, ...]], Dataset] = {}
        self._arrays: OrderedDict[tuple[str, str, str], tuple[Dataset, LabeledData]] = OrderedDict()

    def registry(self, plugin_dirs: tuple[str, ...]) -> Registry:
        """One registry per set of plugin folders (scanning them imports every plugin file)."""
        if plugin_dirs not in self._registries:
            self._registries[plugin_dirs] = Registry([Path(d) for d in plugin_dirs])
        return self._registries[plugin_dirs]

    def dataset(self, registry: Registry, dataset_id: str) -> Dataset:
        """One instance per dataset id: a source that learns its modality or default
        protocol while loading (``csv:``, ``npz:``) keeps what it learned."""
        key = (dataset_id, tuple(str(d) for d in registry.plugin_dirs))
        if key not in self._instances:
            self._instances[key] = registry.dataset(dataset_id)
        return self._instances[key]

    def adopt(self, dataset: Dataset, data: LabeledData) -> None:
        """Keep arrays loaded elsewhere (a Ray worker's, from the object store) as ``dataset``'s."""
        key = (dataset.id, os.pathsep.join(map(str, data_dirs())), dataset.fingerprint())
        self._arrays[key] = (dataset, data)
        self._arrays.move_to_end(key)
        while len(self._arrays) > self.max_arrays:
            self._arrays.popitem(last=False)

    def load(self, dataset: Dataset) -> LabeledData:
        """The dataset's arrays, loaded once while they stay among the last ``max_arrays`` used.

        A user source (``takes_argument``) learns its modality and default
        protocol from its file while loading, so each such instance loads
        for itself; built-in datasets share one copy of their arrays.
        """
        key = (dataset.id, os.pathsep.join(map(str, data_dirs())), dataset.fingerprint())
        cached = self._arrays.get(key)
        if cached is None or (dataset.takes_argument and cached[0] is not dataset):
            cached = (dataset, load(dataset))
            self._arrays[key] = cached
        self._arrays.move_to_end(key)
        while len(self._arrays) > self.max_arrays:
            self._arrays.popitem(last=False)
        return cached[1]
