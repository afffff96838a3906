"""Typed payloads between tasks: one dataclass per XCom value, written and read through the same class.

A task returns ``SomePayload(...).to_json()`` (plain JSON data: XCom's default serialiser stores
it in any deployment, with no class allow-listing) and the task that reads it calls
``SomePayload.from_json(value, where="<operator>.<argument>")``, which checks every field against
the dataclass's annotations and fails in one line naming the payload and the field at fault.

Fields may be ``str``, ``int``, ``float``, ``bool``, ``None`` unions, ``dict[str, X]``,
``list[X]``, ``tuple[X, ...]`` / fixed tuples and other payloads. A field's JSON key is its name,
or ``field(metadata={"json": "key"})``. Standard library only.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar, Union

from pipelines.core.errors import InputError

__all__ = ["Payload", "PayloadError", "native"]

P = TypeVar("P", bound="Payload")


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], tuple[tuple[dataclasses.Field[Any], str], ...]]:
    """A payload class's resolved type hints and its init fields with their JSON keys (resolved once per class)."""
    fields = tuple((f, _key(f)) for f in dataclasses.fields(cls) if f.init)
    return typing.get_type_hints(cls), fields


class PayloadError(InputError):
    """A value between tasks is not what its payload class says (fatal: a retry reads the same value)."""


def _key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("json", f.name))


def _encode(value: Any) -> Any:
    if isinstance(value, Payload):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _decode(arg, value, where)
            except PayloadError as exc:
                errors.append(str(exc))
        raise PayloadError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is none of {tp}")
    if isinstance(tp, type) and issubclass(tp, Payload):
        return tp.from_json(value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise PayloadError(f"{where}: expected an object, got {type(value).__name__} {value!r:.80}")
        return {str(k): _decode(args[1] if args else Any, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise PayloadError(f"{where}: expected a list, got {type(value).__name__} {value!r:.80}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise PayloadError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return _scalar(value, tp, where)


def native(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the type ``tp`` (e.g. ``bool``, ``int | None``, ``list[tuple[str, str]]``).

    An int where a float is asked is widened; anything else that does not match is a one-line
    :class:`PayloadError` naming ``where``. Operators call it on their rendered arguments: a DAG
    renders native values (``render_template_as_native_obj=True``), so a string where a number or
    flag belongs is a mistake to name, not to guess at.
    """
    return _decode(tp, value, where)


def _scalar(value: Any, tp: type, where: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise PayloadError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, tp):
        return value
    hint = ""
    if isinstance(value, str) and tp is not str:
        hint = " (a template rendered as text: give the DAG render_template_as_native_obj=True)"
    raise PayloadError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r:.80}{hint}")


class Payload:
    """Base of the dataclasses tasks exchange through XCom."""

    def to_json(self) -> dict[str, Any]:
        """The payload as JSON-safe data."""
        return {_key(f): _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls: type[P], data: Any, where: str | None = None) -> P:
        """The payload back from :meth:`to_json`; raises :class:`PayloadError` naming the field at fault."""
        where = where or cls.__name__
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise PayloadError(
                f"{where}: expected a {cls.__name__} (an object), got {type(data).__name__} {data!r:.80}"
            )
        hints, fields = _shape(cls)  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        for f, key in fields:
            if key not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise PayloadError(f"{where}: {cls.__name__} has no field {key!r} (got {sorted(data)})")
                continue
            values[f.name] = _decode(hints[f.name], data[key], f"{where}.{key}")
        return cls(**values)
