"""Training methods: A&D and the baselines, siblings behind ``base.Method``."""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import UserError
from .base import METHODS, Method, register


def _load_all() -> None:
    # Every module in this package registers its methods on import, so a new
    # method is one new file.
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "ramps", "difficulty"):
            importlib.import_module(f"{__name__}.{info.name}")


def method_names() -> list[str]:
    _load_all()
    return sorted(METHODS)


def get_method(name: str) -> type[Method]:
    _load_all()
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["Method", "register", "get_method", "method_names"]
