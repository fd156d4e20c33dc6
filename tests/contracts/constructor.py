"""The plain-typed-constructor rule every registry entry follows (recipe keys = constructor keywords)."""

from __future__ import annotations

import inspect
import typing


def assert_plain_typed_constructor(cls: type, row_keys: set[str]) -> list[str]:
    """No ``*args``/``**kwargs``, every keyword annotated (the recipe type checks read them), and the
    contract row uses only real keywords. Returns the keyword names in order."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters), cls
    names = [p.name for p in parameters]
    assert set(names) <= set(typing.get_type_hints(cls.__init__)), cls
    assert row_keys <= set(names), f"{cls.__name__}: the row names unknown keywords {row_keys - set(names)}"
    return names
