"""The stable facade that plugin authors import: the contracts between odbench and its plugins.

Conventions kept by every file of odbench:

* In a :class:`Split`, label ``0`` is normal (the paper's positive class) and
  ``1`` is anomalous.
* ``Method.anomaly_score(X)`` returns shape ``(n,)``; **higher = more
  anomalous**.  A method whose model says "higher = normal" negates at its own
  boundary, never in the caller.
* A dataset plugin knows how to fetch and load arrays and class ids; only a
  protocol (``odbench.protocols``) turns class ids into normal/anomalous.

The definitions live in ``odbench.core``; this module only names them, so
that the engine can be reorganised without breaking a plugin.  Building
blocks for deep methods are in ``odbench.deep`` and ``odbench.drocc``;
:class:`PyodMethod` wraps any pyod detector (``make_detector(params, seed)``).
"""

from odbench.classical.pyod_adapter import PyodMethod
from odbench.core.contracts import (
    ANOMALY,
    MODALITIES,
    NORMAL,
    DataError,
    DataInfo,
    Dataset,
    FitContext,
    FitTask,
    LabeledData,
    Method,
    Split,
    Task,
)
from odbench.core.download import DataUnavailable, RemoteFile
from odbench.core.params import NoParams, ParamError, param

__all__ = [
    "ANOMALY", "MODALITIES", "NORMAL", "DataError", "DataInfo", "DataUnavailable", "Dataset", "FitContext",
    "FitTask", "LabeledData", "Method", "NoParams", "ParamError", "PyodMethod", "RemoteFile", "Split", "Task", "param",
]  # fmt: skip
