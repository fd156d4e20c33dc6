"""Readable type names in recipe errors (``ssl_toolkit.recipe.typecheck.type_name``)."""

from typing import Literal, Optional, Union

from ssl_toolkit.recipe.typecheck import type_name


def test_type_names() -> None:
    assert type_name(int) == "int"
    assert type_name(Optional[int]) == "int or None"  # noqa: UP045 (the spelling Lightning uses)
    assert type_name(int | None) == "int or None"
    assert type_name(Literal["a"]) == "'a'"
    assert type_name(Union[Literal[16, 32], Literal["bf16-mixed"], None]) == "one of 16, 32, 'bf16-mixed', None"  # noqa: UP007
