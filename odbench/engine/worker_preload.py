"""Imported once by the local pool's fork server (``LocalPoolExecutor``).

Every worker is forked from that server, so what is imported here is paid
once per suite, not once per worker (scikit-learn alone takes seconds on a
small machine).  Only what every job needs: the engine, the metrics and
pyod's base.  The plugin files, torch among their imports, are imported by
a worker when its first job needs them, and stay for its next jobs (workers
are warm); the fork server preloads torch too when this process has already
imported it (``pool_context``).  Preloading every plugin file made a kNN
run's first job wait for torch's import, and preloading torch for a suite
with a deep method made its first job start 1.2 s later for the same total
time (a lone DROCC job on sine2d, 2-core AVX2 EPYC).
"""

from __future__ import annotations

import contextlib

import sklearn.metrics  # noqa: F401  (used by odbench.core.metrics in every job)

import odbench.engine.execute  # noqa: F401  (every job runs through it)

with contextlib.suppress(ImportError):
    import pyod.models.base  # noqa: F401  (the classical baselines)
