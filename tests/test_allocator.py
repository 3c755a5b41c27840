"""The malloc setting the command line makes at start-up, and the ways it stays off."""
import json
import subprocess
import sys

import pytest

from genericssl import allocator

PROBE = ("import json; from genericssl import allocator; "
         "print(json.dumps(allocator.keep_freed_memory()))")


def probe(env):
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture
def clean_env(monkeypatch):
    import os
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD", allocator.ENV))}
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_tuned_by_default_on_glibc(clean_env):
    got = probe(clean_env)
    assert got["tuned"] is True and "mmap threshold 16 MiB" in got["why"]


def test_keep_mode_keeps_the_old_setting(clean_env):
    got = probe({**clean_env, "GENERICSSL_MALLOC": "keep"})
    assert got["tuned"] is True and "mmap threshold 1 GiB" in got["why"] and "huge pages" not in got["why"]


BLOCKS = """
import json, torch
from genericssl import allocator
state = allocator.keep_freed_memory()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def huge():
    return sum(int(l.split()[1]) for l in open("/proc/self/smaps") if l.startswith("AnonHugePages")) * 1024
big = torch.ones(64 << 20)  # 256 MiB, more than the heap holds free: its own mapping
in_huge_pages = huge()
before = rss()
del big
returned = before - rss()
small = [torch.ones(1 << 20) for _ in range(64)]  # 64 blocks of 4 MiB
del small
r0 = rss()
again = [torch.ones(1 << 20) for _ in range(64)]
kept = rss() - r0  # the heap's freed blocks were reused: no new memory
print(json.dumps({"state": state, "small_regrowth": kept, "big_returned": returned,
                  "huge": in_huge_pages}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_small_blocks_are_kept_and_large_ones_returned(clean_env):
    out = subprocess.run([sys.executable, "-c", BLOCKS], env=clean_env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["state"]["tuned"] is True
    assert got["small_regrowth"] < 16 << 20  # 256 MiB allocated again, served from the kept heap
    assert got["big_returned"] > 200 << 20  # the 256 MiB block went back to the system at once
    thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    if "[never]" not in thp:
        assert got["huge"] >= 128 << 20  # torch asked for huge pages and the kernel gave them


@pytest.mark.parametrize("extra, why", [
    ({"GENERICSSL_MALLOC": "system"}, "GENERICSSL_MALLOC=system"),
    ({"MALLOC_ARENA_MAX": "2", "MALLOC_TOP_PAD_": "1"}, "MALLOC_TOP_PAD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "GLIBC_TUNABLES"),
    ({"GENERICSSL_MALLOC": "fast"}, "is not 'tuned', 'keep' or 'system'"),
])
def test_stays_off_when_the_process_chose_otherwise(clean_env, extra, why):
    got = probe({**clean_env, **extra})
    assert got["tuned"] is False and why in got["why"]


def test_a_preloaded_allocator_is_left_alone(clean_env):
    # (a library that does not exist: ld.so says so on stderr and runs the program anyway)
    got = probe({**clean_env, "LD_PRELOAD": "/nonexistent/libjemalloc.so.2"})
    assert got["tuned"] is False and "preloaded" in got["why"]
