"""Memory for large, short-lived tensors: glibc's malloc and the kernel's huge pages, tuned.

By default glibc serves every allocation above ~128 KiB-32 MiB (its threshold adapts)
with a fresh ``mmap`` of 4 KiB pages and gives it back with ``munmap`` on free, and
trims the heap's top whenever 128 KiB are free there. A training step or a sliding
window allocates and frees tensors of tens to hundreds of MB many times a second, so
the kernel faults in and zero-fills the same memory 4 KiB at a time, over and over: on
this project's 2-core machine an A&D iteration at S spent 7.8 of 47 CPU-seconds (4
iterations) in the kernel, with 1.5 million page faults. Keeping every freed block in
the heap instead (this module's first setting) removed the faults but left freed holes
resident: peak memory rose by a third to a half.

:func:`keep_freed_memory` splits the two cases (``mallopt``, for this process and the
loader workers it forks). Blocks below 16 MiB come from the heap, which keeps up to 2
GiB free instead of trimming it and grows 64 MiB at a time, so the many small and
middle-sized tensors are reused without a fault. Blocks from 16 MiB up (the
activations that make up most of the memory) get their own mapping, returned to the
system when freed, so no hole stays resident (a block that fits into free heap space
is still served from there: the heap never grows for it); torch is asked (``THP_MEM_ALLOC_ENABLE``)
to back them with 2 MiB transparent huge pages, which cost one fault per 2 MiB instead
of 512. The command line does this at start-up. ``GENERICSSL_MALLOC=keep`` keeps every
block below 1 GiB in the heap instead (this module's first setting: no zero-filling at
all, the fastest on a CPU with memory to spare); ``GENERICSSL_MALLOC=system`` turns it
off, and it stays off by itself when the process already chose its allocator: another
malloc preloaded (jemalloc, tcmalloc via ``LD_PRELOAD``), glibc's own ``MALLOC_*_``
variables or ``GLIBC_TUNABLES`` set, or a C library that is not glibc. A
``THP_MEM_ALLOC_ENABLE`` already in the environment is left as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# GENERICSSL_MALLOC value -> (mallopt settings, description, huge pages for torch's blocks)
MODES = {
    "tuned": ({M_MMAP_THRESHOLD: 16 << 20, M_TRIM_THRESHOLD: 2 ** 31 - 1, M_TOP_PAD: 64 << 20},
              "mmap threshold 16 MiB, trim threshold 2 GiB, top pad 64 MiB", True),
    # Every block below 1 GiB stays in the heap: no fault ever, the most resident memory.
    "keep": ({M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 2 ** 31 - 1, M_TOP_PAD: 1 << 30},
             "keep: mmap threshold 1 GiB, trim threshold 2 GiB, top pad 1 GiB", False),
}
# torch's CPU allocator reads this at its first large allocation: madvise(MADV_HUGEPAGE)
# on every block of 2 MiB or more.
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
ENV = "GENERICSSL_MALLOC"

_state = {"tuned": False, "why": "not configured"}


def _mode() -> str:
    choice = os.environ.get(ENV, "tuned").strip().lower()
    return "tuned" if choice in ("on", "1", "yes", "true", "") else choice


def _reason_to_skip() -> str | None:
    choice = _mode()
    if choice in ("system", "off", "0", "no", "false"):
        return f"{ENV}={os.environ[ENV]}"
    if choice not in MODES:
        return f"{ENV}={os.environ[ENV]!r} is not 'tuned', 'keep' or 'system'"
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
            settings, description, huge = MODES[_mode()]
            refused = [opt for opt, value in settings.items() if mallopt(opt, value) != 1]
            why = f"mallopt refused option(s) {refused}" if refused else None
    if why is None:
        if huge:
            os.environ.setdefault(HUGE_PAGES_ENV, "1")
            description += f"; huge pages {_huge_pages()}"
        _state.update(tuned=True, why=description)
    else:
        _state.update(tuned=False, why=why)
    return state()


def _huge_pages() -> str:
    """What the kernel will do with torch's huge-page requests, for the reports."""
    if os.environ.get(HUGE_PAGES_ENV) != "1":
        return f"off ({HUGE_PAGES_ENV}={os.environ.get(HUGE_PAGES_ENV)})"
    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "requested (kernel setting unknown)"
    return "requested" if mode in ("always", "madvise") else f"requested, but the kernel's THP mode is {mode!r}"


def state() -> dict:
    """{"tuned": bool, "why": what was set, or why nothing was} for the benchmarks' reports."""
    return dict(_state)
