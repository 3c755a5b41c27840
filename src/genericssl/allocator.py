"""Keep freed memory in the process: glibc's malloc tuned for large, short-lived tensors.

By default glibc serves every allocation above ~128 KiB-32 MiB (its threshold adapts)
with a fresh ``mmap`` and gives it back with ``munmap`` on free, and trims the heap's
top whenever 128 KiB are free there. A training step or a sliding window allocates and
frees tensors of tens to hundreds of MB many times a second, so the kernel zero-fills
the same pages over and over: on this project's 2-core machine an A&D iteration at S
spent 7.8 of 47 CPU-seconds (4 iterations) in the kernel, with 1.5 million page faults.

:func:`keep_freed_memory` asks malloc (``mallopt``, for this process and the loader
workers it forks) to serve allocations below 1 GiB from its heap, to keep up to 2 GiB
free at the top of the heap instead of trimming it, and to grow the heap 1 GiB at a
time. Freed pages are then reused without a fault. The cost is peak resident memory a
few percent higher (memory freed by one step stays mapped for the next). The command
line does this at start-up; ``GENERICSSL_MALLOC=system`` turns it off, and it stays off
by itself when the process already chose its allocator: another malloc preloaded
(jemalloc, tcmalloc via ``LD_PRELOAD``), glibc's own ``MALLOC_*_`` variables or
``GLIBC_TUNABLES`` set, or a C library that is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 2 ** 31 - 1, M_TOP_PAD: 1 << 30}
ENV = "GENERICSSL_MALLOC"

_state = {"tuned": False, "why": "not configured"}


def _reason_to_skip() -> str | None:
    choice = os.environ.get(ENV, "tuned").strip().lower()
    if choice in ("system", "off", "0", "no", "false"):
        return f"{ENV}={os.environ[ENV]}"
    if choice not in ("tuned", "on", "1", "yes", "true", ""):
        return f"{ENV}={os.environ[ENV]!r} is not 'tuned' or 'system'"
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return "another allocator is preloaded (LD_PRELOAD)"
    glibc_vars = [k for k in os.environ if k.startswith("MALLOC_") and k.endswith("_")]
    if glibc_vars or "GLIBC_TUNABLES" in os.environ:
        return f"malloc already configured by the environment ({', '.join(glibc_vars) or 'GLIBC_TUNABLES'})"
    return None


def keep_freed_memory() -> dict:
    """Tune glibc's malloc as the module docstring says (once per process); returns :func:`state`."""
    if _state["tuned"]:
        return state()
    why = _reason_to_skip()
    if why is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            libc.gnu_get_libc_version  # glibc only: musl has no mallopt options of this meaning
        except (OSError, AttributeError):
            why = "the C library is not glibc"
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            refused = [opt for opt, value in SETTINGS.items() if mallopt(opt, value) != 1]
            why = f"mallopt refused option(s) {refused}" if refused else None
    _state.update(tuned=why is None, why=why or "mmap threshold 1 GiB, trim threshold 2 GiB, top pad 1 GiB")
    return state()


def state() -> dict:
    """{"tuned": bool, "why": what was set, or why nothing was} for the benchmarks' reports."""
    return dict(_state)
