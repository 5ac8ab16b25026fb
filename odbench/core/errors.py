"""Errors that cross layers: raised in one layer, caught or reported in another.

They live here, at the bottom, so that catching one never imports the layer
that raises it (an engine running classical methods never loads torch to
catch a deep method's :class:`TrainingDiverged`).  The user's own mistakes in
parameters and data have theirs beside what they check:
``odbench.core.params.ParamError`` and ``odbench.core.contracts.DataError``.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A suite that cannot be run as asked (bad class, option, device): the CLI says it in one line, exit 2."""


class TrainingDiverged(RuntimeError):
    """Training diverged (``odbench.deep.training.DivergenceGuard``); the job fails with this reason."""
