"""``--nproc N``: N local processes through torch's own elastic launcher (what torchrun runs).

Each process runs the same ``genericssl`` command line without ``--nproc``, with
torchrun's environment (RANK, WORLD_SIZE, ...), exactly as
``torchrun --standalone --nproc-per-node N -m genericssl ...`` would start it.
"""
from __future__ import annotations

import os
import sys
import uuid

from .distributed import launched_world_size
from .errors import UserError


def strip_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def threads_per_process(nproc: int) -> int:
    return max(1, (os.cpu_count() or 1) // nproc)


def launch_local(nproc: int, argv: list[str], log=print) -> int:
    """Run ``python -m genericssl *argv`` in ``nproc`` processes; the exit code of the job.

    One failing process ends them all (the launcher stops the rest, so none is left
    waiting in a collective); its message is the one printed above.
    """
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    if launched_world_size() > 1:
        raise UserError("--nproc inside a job that torchrun already started: drop --nproc "
                        "(torchrun's --nproc-per-node sets the number of processes)")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # As torchrun does, but sharing the cores instead of one thread each.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1)
    log(f"launching {nproc} processes ({os.environ['OMP_NUM_THREADS']} CPU thread(s) each)", file=sys.stderr)
    try:
        elastic_launch(config, sys.executable)("-m", "genericssl", *argv)
    except ChildFailedError as e:
        # The first to fail is the cause; the launcher stopped the others after it.
        rank, failure = min(e.failures.items(), key=lambda kv: kv[1].timestamp)
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        log(f"genericssl: process {rank} of {nproc} {how}; the job stopped "
            f"({len(e.failures)} process(es) failed)", file=sys.stderr)
        return code if code > 0 else 1
    return 0
