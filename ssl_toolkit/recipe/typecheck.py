"""Check a recipe value against a constructor's type annotation (the subset recipes can hold)."""

from __future__ import annotations

import collections.abc
import math
import types
import typing
from typing import Any, Literal, Union


def matches(value: Any, annotation: Any) -> bool:
    """True if the YAML value ``value`` fits ``annotation``.

    Understands None, bool, int, float (ints accepted), str, Literal, Union / ``X | Y``,
    tuple[...], list[...], Sequence[...], dict / Mapping. Anything else (a class the recipe cannot
    spell, a Callable) is left to the constructor: True.
    """
    if annotation is Any or annotation is None and value is None:
        return True
    if annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union or origin is types.UnionType:
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:  # NaN and +-inf are refused: no constructor means them
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(matches(v, a) for v, a in zip(value, args)))
    if origin in (list, collections.abc.Sequence):
        return (
            isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value)
            if args
            else isinstance(value, (list, tuple))
        )
    if annotation in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def type_name(annotation: Any) -> str:
    """Readable form of an annotation for error messages.

    Unions and Literals are flattened: ``Union[Literal[16, 32], Literal['bf16-mixed'], None]`` reads
    ``one of 16, 32, 'bf16-mixed', None`` and ``int | None`` reads ``int or None``.
    """
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType or origin is Literal:
        values: list[str] = []  # the Literal values and None, in order
        others: list[str] = []  # the other member types
        for member in _flatten(annotation):
            if typing.get_origin(member) is Literal:
                values.extend(repr(v) for v in typing.get_args(member))
            elif member is type(None):
                values.append("None")
            else:
                others.append(type_name(member))
        if not others:
            return values[0] if len(values) == 1 else "one of " + ", ".join(values)
        return " or ".join([*others, *values])
    return str(annotation).replace("typing.", "")


def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return [m for a in typing.get_args(annotation) for m in _flatten(a)]
    return [annotation]


def non_finite(value: Any) -> float | None:
    """The first NaN or infinite float in ``value`` (a number, or lists/dicts of them), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((bad for bad in map(non_finite, items) if bad is not None), None)
