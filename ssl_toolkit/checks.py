"""Argument checks shared by every constructor: one wording for every ``ValueError`` they raise.

Messages start with the argument name (``k: must be an int >= 1, got 0``), so the recipe builder
can prefix the section and the user reads ``callbacks.knn.k: must be an int >= 1, got 0``.
"""

from __future__ import annotations

import math


def check_int(name: str, value: object, minimum: int = 1, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int (not a bool) ``>= minimum``.

    Args:
        name: the argument's name, as the caller's constructor spells it.
        value: what the caller received.
        minimum: the smallest allowed value (1: a positive int, 0: a count that may be zero).
        optional: ``None`` is allowed too.
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: must be an int >= {minimum}, got {value!r}")


def check_positive(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number > 0 (a temperature, an eps)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
