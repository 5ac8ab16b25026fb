"""Input scaling, fitted on the training split only.

Float data (tabular, sequences) are standardized once, when the task is
built: zero mean and unit variance per feature (per channel for sequences),
with statistics from the training split's normal points (all its points
when it is unlabelled).  This is what the paper assumes when it sets
DROCC's radius to √d/2, and what PyOD's benchmark does.  A protocol may ask
for another scaling in ``task.notes["scaling"]``: ``"minmax"`` maps each
feature's training range to [0, 1] (ADBench's ``MinMaxScaler``; test values
may fall outside).  uint8 images stay uint8 in memory; :func:`as_float`
scales a batch to [0, 1] and normalizes each channel when the batch is
formed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from odbench.core.contracts import Split, Task
from odbench.data.inputs import as_float as as_float  # re-exported: older imports name it here

_EPS = 1e-8
SCALINGS = ("zscore", "minmax")


def _channel_axes(X: np.ndarray, modality: str) -> tuple[int, ...]:
    """Axes to average over: all but the feature/channel axis."""
    if modality == "image":
        return (0, *range(2, X.ndim))  # (N, C, H, W): per channel
    return tuple(range(X.ndim - 1))  # (N, d) or (N, T, F): per feature


def _scale(split: Split, shift: np.ndarray, scale: np.ndarray) -> Split:
    return replace(split, X=((split.X - shift) / scale).astype(np.float32))


def standardize(task: Task, channel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Task:
    """The task with its inputs scaled by statistics of the train normals.

    Float inputs are z-scored (or min-max scaled, where the protocol's
    ``task.notes["scaling"]`` says ``"minmax"``) in place of the originals
    (one copy).  uint8 images are left as they are; their per-channel
    statistics (``channel_stats`` when the dataset fixes them) go into
    ``task.info``.
    """
    scaling = task.notes.get("scaling", "zscore")
    if scaling not in SCALINGS:
        raise ValueError(f"protocol {task.protocol!r} asks for unknown scaling {scaling!r}; known: {', '.join(SCALINGS)}")
    modality = task.info.modality
    reference = task.train.normal
    if task.train.X.dtype == np.uint8:
        if channel_stats is None:
            axes = _channel_axes(reference, modality)
            sample = reference[:5000].astype(np.float32) / 255.0
            channel_stats = (tuple(sample.mean(axis=axes).tolist()), tuple((sample.std(axis=axes) + _EPS).tolist()))
        info = replace(task.info, channel_mean=channel_stats[0], channel_std=channel_stats[1])
        return replace(task, info=info)
    axes = _channel_axes(reference, modality)
    ref = reference.astype(np.float64)
    if scaling == "minmax":
        shift, scale = ref.min(axis=axes), ref.max(axis=axes) - ref.min(axis=axes)
    else:
        shift, scale = ref.mean(axis=axes), ref.std(axis=axes)
    scale = np.where(scale < _EPS, 1.0, scale)  # constant features stay constant, not inf
    return replace(
        task,
        train=_scale(task.train, shift, scale),
        val=_scale(task.val, shift, scale),
        test=_scale(task.test, shift, scale),
    )
