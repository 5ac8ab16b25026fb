"""Method parameters, declared once as a dataclass: defaults, meanings, types, checks.

A method plugin declares its parameters as a dataclass (``Method.Params``)
whose fields are made with :func:`param`::

    @dataclass
    class Params:
        n_neighbors: int = param(5, "neighbours whose distance is the score", low=1)
        method: str = param("largest", "how the k distances are pooled", choices=("largest", "mean", "median"))

From that one declaration come the defaults, the check of unknown names,
the coercion of ``--param`` values typed on a command line, the names a
search space may suggest, and ``odbench list --params``.  A default that
depends on the data (DROCC's radius √d/2) is declared ``None`` here and
filled in by the method's ``data_defaults(info)``; the help text says so,
and the annotation is the type of the value filled in (``radius: float``).
The manners follow scikit-learn's: parameters are plain values, and a
method's ``__init__`` only stores them.

Engineering settings (a deep method's precision, its scoring batch) say how
a method runs, not what it computes.  They are declared the same way in a
second dataclass that the parameters name as their ``Runtime``::

    @dataclass
    class Params:
        Runtime: ClassVar[type] = DeepRuntime
        epochs: int = param(50, "training epochs", low=1)

The user sets both alike (``--param drocc.precision=fp32``), records state
both, and ``specs`` lists both; a fitted method reads its parameters in
``method.params`` and its runtime settings in ``method.runtime``
(``odbench.core.contracts.Method``).  A setting that cannot change a number
(the scoring batch size: scores do not depend on batching) is declared
``keyed=False`` and stays out of the job key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union


class ParamError(ValueError):
    """A parameter a method does not know, or a value it cannot take (a user error)."""


@dataclass(frozen=True)
class Spec:
    """What the declaration says about one parameter."""

    name: str
    default: Any
    help: str
    annotation: Any
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    #: declared in the parameters' ``Runtime`` (an engineering setting), not among the method's own parameters
    runtime: bool = False
    #: part of the job key: False only for a setting that cannot change any number
    keyed: bool = True

    @property
    def type_name(self) -> str:
        return _type_name(self.annotation)


def param(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    keyed: bool = True,
) -> Any:
    """A dataclass field that declares one method parameter (``low``/``high`` are inclusive).

    ``keyed=False`` (runtime settings only) keeps it out of the job key: say so only of a setting
    that cannot change a number.
    """
    meta = {"help": help, "choices": choices, "low": low, "high": high, "keyed": keyed}
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class NoParams:
    """The declaration of a method without parameters (and of a method without runtime settings)."""


def runtime_of(declaration: type) -> type:
    """The runtime settings' dataclass that a ``Params`` dataclass names (``NoParams`` when none)."""
    return getattr(declaration, "Runtime", None) or NoParams


def specs(declaration: type) -> dict[str, Spec]:
    """Everything a ``Params`` dataclass declares, its own fields then its ``Runtime``'s, in declaration order."""
    found = _fields(declaration, runtime=False)
    for name, spec in _fields(runtime_of(declaration), runtime=True).items():
        if name in found:
            raise TypeError(f"{declaration.__qualname__} declares {name!r} both as a parameter and in its Runtime")
        found[name] = spec
    return found


def _fields(declaration: type, runtime: bool) -> dict[str, Spec]:
    hints = typing.get_type_hints(declaration)
    found = {}
    for f in dataclasses.fields(declaration):
        meta = f.metadata
        found[f.name] = Spec(
            f.name, f.default, meta.get("help", ""), hints[f.name], meta.get("choices"), meta.get("low"), meta.get("high"),
            runtime=runtime, keyed=meta.get("keyed", True),
        )  # fmt: skip
    return found


def instantiate(declaration: type, resolved: Mapping[str, Any]) -> tuple[Any, Any]:
    """The parameters and the runtime settings of a resolved set, as instances of their two dataclasses."""
    runtime = runtime_of(declaration)
    own = {f.name for f in dataclasses.fields(declaration)}
    engineering = {f.name for f in dataclasses.fields(runtime)}
    return (
        declaration(**{k: v for k, v in resolved.items() if k in own}),
        runtime(**{k: v for k, v in resolved.items() if k in engineering}),
    )


def declared_defaults(declaration: type) -> dict[str, Any]:
    """Every declared parameter with its default (``None`` where the data decide)."""
    return {name: spec.default for name, spec in specs(declaration).items()}


def check(method: str, declaration: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` with each value coerced to its declared type; raises :class:`ParamError`.

    Strings (from a command line) are parsed as JSON first where the type
    is not a string, so ``"3"`` becomes ``3`` for an ``int``.
    """
    return check_specs(method, specs(declaration), given)


def check_specs(method: str, known: Mapping[str, Spec], given: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`check` against specs already read (``odbench.engine.plugin_index`` keeps them without the class)."""
    checked = {}
    for name, value in given.items():
        spec = known.get(name)
        if spec is None:
            listing = ", ".join(known) or "none"
            raise ParamError(f"method {method!r} has no parameter {name!r}; its parameters: {listing}")
        checked[name] = coerce(f"{method}.{spec.name}", spec, value)
    return checked


def coerce(where: str, spec: Spec, value: Any) -> Any:
    """``value`` as ``spec`` declares it (type, choices, range), or :class:`ParamError` naming ``where``.

    ``None`` is accepted wherever the default is ``None``: it asks for the default, which the data decide
    (``data_defaults``); the annotation is the type of the resolved value, which is what a plugin reads.
    """
    if value is None and spec.default is None:
        return None
    try:
        out = _as(spec.annotation, value)
    except (TypeError, ValueError):
        shown = "''" if value == "" else repr(value)
        raise ParamError(f"{where} must be {_type_name(spec.annotation)}, got {shown}") from None
    if out is None:
        return None
    if spec.choices is not None and out not in spec.choices:
        raise ParamError(f"{where} must be one of {', '.join(map(repr, spec.choices))}, got {out!r}")
    if isinstance(out, float) and not math.isfinite(out):  # NaN passes every bound below
        raise ParamError(f"{where} must be a finite number, got {out!r}")
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        if spec.low is not None and out < spec.low:
            raise ParamError(f"{where} must be at least {spec.low:g}, got {out!r}")
        if spec.high is not None and out > spec.high:
            raise ParamError(f"{where} must be at most {spec.high:g}, got {out!r}")
    return out


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _as(annotation: Any, value: Any) -> Any:
    """``value`` as the annotated type, or ``ValueError``; unions try their members in turn."""
    members = _members(annotation)
    if isinstance(value, str) and str not in members and value.strip():
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # left as typed: the members below say it is wrong
    if value is None:
        if type(None) in members or annotation is Any:
            return None
        raise ValueError("None")
    for member in members:
        try:
            return _as_one(member, value)
        except (TypeError, ValueError):
            continue
    raise ValueError(value)


def _as_one(member: Any, value: Any) -> Any:
    if member is Any:
        return value
    if member is type(None):
        raise ValueError(value)
    if member is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(value)
    if member is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(value)
        return int(value)
    if member is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(value)
        return float(value)
    if member is str:
        if not isinstance(value, str) or not value:
            raise ValueError(value)
        return value
    origin = typing.get_origin(member) or member
    if origin in (tuple, list, Sequence, Iterable):
        if not isinstance(value, (list, tuple)):
            raise ValueError(value)
        return _frozen(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(value)
        return value
    raise TypeError(f"unsupported parameter type {member!r}")


def _frozen(value: Any) -> Any:
    """Lists (as JSON gives them) as tuples, all the way down: parameters are hashable values."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _type_name(annotation: Any) -> str:
    names = []
    for member in _members(annotation):
        if member is type(None):
            continue
        origin = typing.get_origin(member) or member
        names.append({int: "an integer", float: "a number", bool: "true or false", str: "a string",
                      tuple: "a list", list: "a list", Sequence: "a list", Iterable: "a list",
                      dict: "a JSON object"}.get(origin, str(member)))  # fmt: skip
    return " or ".join(names) or "None"
