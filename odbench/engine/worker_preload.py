"""Imported once by the process pool's fork server (``LocalPoolExecutor``).

Each job runs in a fresh process forked from that server, so whatever is
imported here is paid for once per suite instead of once per job (importing
scikit-learn alone takes seconds on a small machine).
"""

from __future__ import annotations

import contextlib

import sklearn.metrics  # noqa: F401  (used by odbench.core.metrics in every job)

from odbench.engine.registry import Registry

with contextlib.suppress(ImportError):
    import pyod.models.base  # noqa: F401  (the classical baselines)

Registry().load_files()  # imports what the bundled plugin files import, once for every job of the suite
