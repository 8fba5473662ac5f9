"""Checks for optional dependencies without importing them."""

from __future__ import annotations

import importlib.util

from edgerec.errors import MissingExtraError


def has_module(name: str) -> bool:
    """Return True when ``name`` is importable, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` when ``module`` is absent."""
    if not has_module(module):
        raise MissingExtraError(extra, module)
