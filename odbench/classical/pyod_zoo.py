"""``pyod:<Name>``: any pyod detector as an odbench method, its parameters read from its own signature.

:func:`zoo_method` builds one :class:`~odbench.classical.pyod_adapter.PyodMethod`
subclass per detector, importing the detector's module only then.  Its
``Params`` declaration comes from the detector's ``__init__``: each
argument's name and default, a type from the default (widened by the types
the docstring names, so IForest's ``max_samples="auto"`` takes 256 too), and
the docstring's first line about it as its meaning.  So typos and wrong types
in ``--param pyod:ECOD.n_jobs=1`` fail like any method's.

odbench, not the user, sets what it owns: the seed (``random_state`` /
``random_seed``), the device (``device=``, where pyod takes one), and
``verbose`` (off).  ``contamination`` is not offered: pyod uses it only to
threshold scores into labels, and odbench keeps scores.  A dict-valued
default (the optimiser's ``optimizer_params``) stays pyod's.

The classes live in this module under ``Pyod_<Name>`` (built on first
access through the module's ``__getattr__``), so a job pickled to a worker
process finds its method class again.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from functools import cache
from typing import Any, Union

from odbench.classical.pyod_adapter import PyodMethod
from odbench.classical.pyod_catalogue import BY_NAME, PREFIX, Entry, pyod_version
from odbench.core.contracts import DataInfo
from odbench.core.params import param

#: set by odbench from the job, never by the user: seed, device, chatter; contamination only thresholds labels
OWNED = frozenset({"random_state", "random_seed", "device", "verbose", "contamination", "self"})
_ATTRIBUTE_PREFIX = "Pyod_"
_DOC_TYPES: dict[str, type] = {"int": int, "integer": int, "float": float, "str": str, "string": str, "bool": bool}


class PyodZooMethod(PyodMethod):
    """The base of every ``pyod:<Name>`` class; ``detector_class`` and ``entry`` are set per detector."""

    detector_class: type
    entry: Entry

    @classmethod
    def data_defaults(cls, info: DataInfo) -> dict[str, Any]:
        return {name: getattr(info, attribute) for name, attribute in cls.entry.from_data.items()}

    def make_detector(self, params: dict[str, Any], seed: int) -> Any:
        accepted = inspect.signature(self.detector_class).parameters
        # declared lists are tuples (hashable parameters); pyod expects lists of layer sizes
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        for name in ("random_state", "random_seed"):
            if name in accepted:
                params[name] = seed
        if "verbose" in accepted:
            params["verbose"] = 0
        if "device" in accepted:
            params["device"] = self.device_
        detector = self.detector_class(**params)
        if "device" not in accepted and hasattr(detector, "device"):
            # AE1SVM, LUNAR and MO_GAAL pick CUDA whenever torch sees it; odbench's --device decides instead,
            # for the device and for any network the constructor already placed (LUNAR builds its own there)
            import torch

            detector.device = torch.device(self.device_)
            for part in vars(detector).values():
                if isinstance(part, torch.nn.Module):
                    part.to(detector.device)
        return detector


def _doc_entries(doc: str) -> dict[str, tuple[str, str]]:
    """``name -> (type text, first line of meaning)`` from a numpydoc ``Parameters`` section."""
    found: dict[str, tuple[str, str]] = {}
    lines = doc.expandtabs().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)(\w+)\s*:\s*(.*)$", line)
        if not match:
            continue
        indent = len(match.group(1))
        meaning = ""
        for following in lines[i + 1 :]:
            if not following.strip():
                if meaning:
                    break
                continue
            if len(following) - len(following.lstrip()) <= indent:
                break
            meaning += (" " if meaning else "") + following.strip()
            if meaning.endswith("."):
                break
        found.setdefault(match.group(2), (match.group(3), meaning))
    return found


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return (text[: end + 1] if end > 0 else text)[:160]


def _annotation(default: Any, type_text: str) -> Any:
    """A type from the default, widened by the plain types the docstring names (``int or float``)."""
    words = set(re.findall(r"[a-z]+", type_text.lower()))
    named = [t for word, t in _DOC_TYPES.items() if word in words]
    if isinstance(default, (list, tuple)) or "list" in words or "tuple" in words:
        named.append(tuple)
    if default is None:
        return Any if not named else Union[(*dict.fromkeys(named), type(None))]  # noqa: UP007 - built at run time
    own = tuple if isinstance(default, (list, tuple)) else type(default)
    members = list(dict.fromkeys([own, *named]))
    if own is bool:  # a flag stays a flag: "bool or int" texts are rare, and True must not become 1
        members = [bool]
    if own is int and float in members and bool in members:
        members.remove(bool)
    return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007


def signature_params(detector_class: type, qualname: str, skip: frozenset[str] = OWNED) -> type:
    """A ``Params`` dataclass declaring ``detector_class``'s constructor arguments (see the module docstring)."""
    docs = _doc_entries(inspect.getdoc(detector_class) or "")
    fields = []
    for name, arg in inspect.signature(detector_class).parameters.items():
        if name in skip or arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
            continue
        default = None if arg.default is inspect.Parameter.empty else arg.default
        if isinstance(default, dict) or not isinstance(default, (int, float, str, bool, list, tuple, type(None))):
            continue  # a dict or an object: pyod's default stays (a dataclass default must be a plain value)
        type_text, meaning = docs.get(name, ("", ""))
        if isinstance(default, list):
            default = tuple(default)
        help_text = _first_sentence(meaning) or f"pyod's {name}"
        if arg.default is inspect.Parameter.empty:
            help_text += " (from the data)"
        fields.append((name, _annotation(default, type_text), param(default, help_text)))
    declaration = dataclasses.make_dataclass("Params", fields)
    declaration.__qualname__ = f"{qualname}.Params"
    declaration.__module__ = __name__
    return declaration


@cache
def zoo_method(name: str) -> type[PyodZooMethod]:
    """The method class of ``pyod:<name>`` (``name`` without the prefix); imports the detector's module.

    Raises ImportError when the module cannot load (an optional dependency is missing).
    """
    entry = BY_NAME[name]
    module = importlib.import_module(f"pyod.models.{entry.module}")
    detector_class = getattr(module, entry.cls)
    qualname = _ATTRIBUTE_PREFIX + name
    summary = _first_sentence((inspect.getdoc(detector_class) or "").split("\n\n")[0])
    namespace = {
        "__module__": __name__,
        "__qualname__": qualname,
        "__doc__": f"pyod {pyod_version()}'s {entry.cls} (pyod.models.{entry.module}): {summary}",
        "name": PREFIX + name,
        "deep": entry.deep,
        "uses_gpu": entry.deep,  # pyod's deep detectors train a torch network on the job's device
        "test_params": dict(entry.test_params),
        "point_by_point": entry.point_by_point,
        "detector_class": detector_class,
        "entry": entry,
        "Params": signature_params(detector_class, qualname),
    }
    return type(qualname, (PyodZooMethod,), namespace)


def __getattr__(attribute: str) -> Any:
    """``Pyod_<Name>``: the method class, so pickle finds a job's class in a worker process."""
    name = attribute.removeprefix(_ATTRIBUTE_PREFIX)
    if attribute.startswith(_ATTRIBUTE_PREFIX) and name in BY_NAME:
        return zoo_method(name)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
