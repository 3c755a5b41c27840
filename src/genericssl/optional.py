"""Packages that only some users need, installed through an extra of ours.

A user who never reads an NRRD file or the LA release's HDF5 volumes does not pay
for SimpleITK or h5py; a user who does gets one line that names the package, what
it is needed for and the ``pip install`` that brings it, instead of a
ModuleNotFoundError from deep inside a preparation step.
"""
from __future__ import annotations

import importlib

from .errors import UserError

# module -> (pip package, extra of genericssl that installs it)
EXTRAS = {
    "SimpleITK": ("SimpleITK", "formats"),
    "h5py": ("h5py", "la"),
    "xlrd": ("xlrd", "mnms"),
}


def require(module: str, purpose: str):
    """Import ``module`` or raise a :class:`UserError` that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = EXTRAS.get(module, (module, None))
        how = (f"pip install 'genericssl[{extra}]' (or pip install {package})" if extra
               else f"pip install {package}")
        raise UserError(f"{purpose} needs the Python package {package}, which is not installed: {how}") from None
