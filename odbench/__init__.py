"""odbench: a benchmark harness for one-class classification and anomaly detection.

From a notebook::

    import odbench
    suite = odbench.Suite(methods=["drocc", "knn"], datasets="digits", classes=[0, 3], params={"drocc": {"epochs": 10}})
    frame = odbench.run(suite, paths=odbench.Paths(results="my_results"))
    frame.groupby("method")["auroc"].mean()

``run``, ``tune`` and ``reproduce`` live in :mod:`odbench.workflows`, their
option bundles (``Suite``, ``Where``, ``Tracking``, ``Paths``, ``Search``,
``Reproduction``) in :mod:`odbench.engine.options`, ``results(path)`` (the
tidy table of a results folder) in :mod:`odbench.views.results` and
``report(path, html=...)`` in :mod:`odbench.views.report`; each is imported on
first use, so ``import odbench`` (and ``odbench --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "run": "odbench.workflows",
    "tune": "odbench.workflows",
    "reproduce": "odbench.workflows",
    "Suite": "odbench.engine.options",
    "Where": "odbench.engine.options",
    "Tracking": "odbench.engine.options",
    "Paths": "odbench.engine.options",
    "Search": "odbench.engine.options",
    "Reproduction": "odbench.engine.options",
    "USER_ERRORS": "odbench.workflows",
    "DEFAULT_SUITE": "odbench.workflows",
    "results": "odbench.views.results",
    "report": "odbench.views.report",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'odbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
