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
    assert got["tuned"] is True and "mmap threshold 1 GiB" in got["why"]


@pytest.mark.parametrize("extra, why", [
    ({"GENERICSSL_MALLOC": "system"}, "GENERICSSL_MALLOC=system"),
    ({"MALLOC_ARENA_MAX": "2", "MALLOC_TOP_PAD_": "1"}, "MALLOC_TOP_PAD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "GLIBC_TUNABLES"),
    ({"GENERICSSL_MALLOC": "fast"}, "is not 'tuned' or 'system'"),
])
def test_stays_off_when_the_process_chose_otherwise(clean_env, extra, why):
    got = probe({**clean_env, **extra})
    assert got["tuned"] is False and why in got["why"]


def test_a_preloaded_allocator_is_left_alone(clean_env):
    # (a library that does not exist: ld.so says so on stderr and runs the program anyway)
    got = probe({**clean_env, "LD_PRELOAD": "/nonexistent/libjemalloc.so.2"})
    assert got["tuned"] is False and "preloaded" in got["why"]
