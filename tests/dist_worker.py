"""One process of a 2-process test job, started by torch's launcher (as torchrun does):

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_worker.py \
        SCENARIO DATA OUT [METHOD ...]

Every process trains with the real Trainer on gloo and writes what it holds
(weights, method state, the error it stopped with) to OUT for the test to compare.
Scenarios: ``train`` (each METHOD in turn), ``nodropout`` (float64, dropout off),
``nan`` (rank 1's loss turns NaN), ``kill`` (rank 1 is SIGKILLed in epoch 1),
``resume`` (continues the killed run), ``nosync`` (the step bypasses DDP, as a
method calling its networks from outside the wrapped forward would), ``nockpt``
(``train`` without activation checkpointing, which ``train`` has by default).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from genericssl.config import TaskConfig, apply_overrides
from genericssl.errors import UserError
from genericssl.methods.base import StepModule
from genericssl.training import Callback, Trainer

# 32^3 patches keep 8 voxels per channel at the V-Net's bottleneck with 1 case per process.
SIZE, PATCH = 36, (32, 32, 32)


def dist_cfg(data, method="ad", **kw):
    base = dict(data_dir=str(data), patch_size=PATCH, num_classes=2, base_filters=4, batch_size=2,
                max_epoch=1, num_workers=0, seed=3, patience=100, method=method)
    base.update(kw)
    return apply_overrides(TaskConfig(), base).validate()


class Float64NoDropout(Callback):
    """Dropout off and the networks (and so the losses) in float64, for comparing 1 and 2
    processes.

    In float32 this tiny network's first gradient is ill-conditioned: two float32
    computations of the same sums in another order (1 process against 2, or against
    itself in float64) differ by up to ~25 %. In float64, 1 and 2 processes agree to
    ~1e-9 after four steps; the runs stay short because training here is chaotic
    (1 against 2 threads in one float64 process: 2e-9 after two steps, 3e-7 after
    four, 5e-2 after six).
    """

    def on_setup(self, trainer):
        method = trainer.method
        for m in method.modules().values():
            m.double()
            m.set_dropout(False)
            for d in m.modules():
                if isinstance(d, nn.modules.dropout._DropoutNd):
                    d.p = 0.0
        prepare = method.prepare_batch

        def prepare_double(batch):
            batch = prepare(batch)
            if batch is not None:
                batch["image"] = batch["image"].double()
            return batch

        method.prepare_batch = prepare_double

    def on_train_start(self, trainer):
        trainer.eval_cases = [(i, image.double(), label) for i, image, label in trainer.eval_cases]


def state_of(trainer) -> dict:
    """Every tensor a process holds: each network's state_dict and the method's extra state."""
    out = {}
    for name, m in trainer.method.modules().items():
        out.update({f"{name}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
    for attr in ("difficulty", "distribution"):  # class weights kept across iterations (A&D, DHC)
        held = getattr(trainer.method, attr, None)
        if held is not None:
            out.update({f"{attr}.{k}": torch.as_tensor(v) for k, v in held.state_dict().items()})
    return out


class KillRank1(Callback):
    def on_iteration_end(self, trainer, epoch, iteration, logs):
        if epoch == 1 and iteration == 0 and trainer.dist.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def train(data, out, rank, method, scenario, **kw):
    run = out / ("run_kill" if scenario in ("kill", "resume") else f"run_{scenario}_{method}")
    callbacks = {"kill": [KillRank1()], "nodropout": [Float64NoDropout()]}.get(scenario, [])
    if scenario == "nockpt":
        kw["checkpoint_levels"] = 0
    t = Trainer(dist_cfg(data, method, **kw), data, run, device="cpu", progress=False, tensorboard=False,
                resume=run if scenario == "resume" else None, callbacks=callbacks)
    if scenario == "nosync":
        t.step = StepModule(t.method)
    if scenario == "nan" and rank == 1:
        real = t.method.train_step

        def nan_step(bl, bu):
            loss, logs = real(bl, bu)
            if t.iterations_run == 1:
                loss = loss * float("nan")
                logs = {**logs, "loss": logs["loss"] * float("nan")}
            return loss, logs

        t.method.train_step = nan_step
    t.fit()
    torch.save(state_of(t), out / f"{scenario}_{method}_rank{rank}.pt")


def main(argv):
    scenario, data, out, *methods = argv
    data, out = Path(data), Path(out)
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    try:
        for method in methods or ["ad"]:
            train(data, out, rank, method, scenario)
    except UserError as e:
        (out / f"{scenario}_error_rank{rank}.txt").write_text(str(e))
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
