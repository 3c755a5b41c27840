"""The training loop: epochs, validation, checkpoints, resume, logging.

It knows the ``Method`` interface and nothing about A&D in particular. Schedules
follow METHOD.md: epochs run 0..E inclusive; after epoch e's training the learning
rate becomes base (1 - e/E)^0.9 and the method's unlabeled weight w_u r(e); the
model is validated (D_theta, eval mode, centre crop) after every epoch, saved when
strictly better, and training stops when ``patience`` epochs pass without a gain.

Several processes (``torchrun``, or ``genericssl train --nproc N``): the same loop
on every process, each with its share of every global batch, its share of the
validation cases and its own random stream (seed + rank); gradients, BatchNorm
statistics, loss batch sums, validation scores and every decision are shared
(``distributed.py``), and each epoch ends with a check that all processes hold
identical weights. Only rank 0 writes files or prints. One process computes exactly
what it computed before several were possible.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .devices import resolve_device
from .checkpoint import check_architecture, load_checkpoint, remove_stale_temporaries, save_checkpoint
from .config import TaskConfig
from .data.loaders import EvalDataset, make_train_loaders
from .data.cases import read_split
from .data.preflight import check_training_data
from .runlock import RunLock
from .errors import AgreedError, UserError
from .losses import hard_batch_dice
from .methods import get_method
from .methods.base import StepModule


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_gauss": random.getstate()[2],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def poly_lr(base: float, epoch: int, max_epoch: int) -> float:
    return base * (1 - epoch / max_epoch) ** 0.9 if max_epoch > 0 else base


def _quiet(*args, **kwargs) -> None:
    pass


class Callback:
    """Hooks into a training run; override what you need. Called on every process
    (``trainer.dist.is_main`` tells rank 0): ``on_setup`` once the method's networks
    exist, before the optimizer is built and before they are wrapped for several
    processes (change the networks there: load weights, freeze, cast);
    ``on_train_start`` when ``fit`` begins; per epoch ``on_epoch_start`` before its first
    iteration, ``on_iteration_end`` after each optimizer step, then ``on_epoch_end`` with
    the epoch's record (after validation,
    before it is logged and checkpointed: what a callback adds to the record is logged
    and resumed with it); ``on_train_end`` with the summary."""

    def on_setup(self, trainer: "Trainer") -> None: ...

    def on_train_start(self, trainer: "Trainer") -> None: ...

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...

    def on_iteration_end(self, trainer: "Trainer", epoch: int, iteration: int, logs: dict) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None: ...

    def on_train_end(self, trainer: "Trainer", summary: dict) -> None: ...


def wrap_for_processes(step: StepModule, ctx: distributed.DistContext, device: torch.device) -> torch.nn.Module:
    """The step itself in one process; DistributedDataParallel around it in several.

    Unused parameters are looked for (every method leaves some: the image stem's time
    embedding, and the decoders a baseline does not train), so they keep no gradient,
    as in one process, and SGD leaves them untouched.
    """
    if not ctx.active:
        return step
    import warnings

    from torch.nn.parallel import DistributedDataParallel
    # Channels-last 1x1x1 kernels (the output convolutions) have strides that differ from
    # their gradients' in size-1 axes only: the same memory order, so nothing to warn about.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # DDP's default broadcast_buffers: rank 0's BatchNorm statistics before each step.
    return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def make_optimizer(parameters, lr: float) -> torch.optim.SGD:
    """The paper's optimizer: SGD, momentum 0.9 (Nesterov), weight decay 3e-5."""
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True, weight_decay=3e-5)


def optimizer_step(step: torch.nn.Module, method, optimizer, scaler, batch_l, batch_u, amp: bool,
                   device_type: str):
    """One iteration: the step's loss (batch sums over the global batch), backward, SGD, ``after_step``."""
    # The last step's gradients are freed before the forward pass rather than after it,
    # so they do not sit beside the activations (one model's size at the iteration's peak).
    optimizer.zero_grad(set_to_none=True)
    with distributed.global_batch(), torch.autocast(device_type, enabled=amp):
        loss, logs = step(batch_l, batch_u)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    method.after_step()
    return loss, logs


class Trainer:
    """Train ``cfg.method`` on the prepared dataset in ``data_dir``; write to ``out_dir``.

    ``out_dir`` receives ``ckpts/best_model.pth`` (the released model; our format is a
    superset of the authors'), ``ckpts/last.pth`` (everything needed to resume),
    ``history.jsonl``, ``config.yaml``, TensorBoard scalars in ``tb/`` and
    ``curves.png``.
    """

    def __init__(self, cfg: TaskConfig, data_dir: str | Path, out_dir: str | Path, device: str = "auto",
                 resume: str | Path | None = None, progress: bool = True, tensorboard: bool = True,
                 overwrite: bool = False, log=print, callbacks=()):
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.dist, self.device = distributed.setup(resolve_device(device))
        self.is_main = self.dist.is_main
        self.progress = progress and self.is_main
        self.log = log if self.is_main else _quiet
        self.callbacks = list(callbacks)
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.ckpt_dir = self.out_dir / "ckpts"
        if not self.data_dir.is_dir():
            raise UserError(f"data folder {self.data_dir} does not exist (set --data-dir, or run "
                            f"'genericssl prepare' first)")
        self.lock = RunLock(self.out_dir, log=self.log)
        distributed.main_decides(self._claim_output)
        try:
            self._setup(cfg, resume, tensorboard, overwrite, progress)
        except BaseException:
            self.lock.release()
            raise

    def _claim_output(self) -> None:
        """Rank 0: one run per folder, the folder writable, a killed run's temporaries gone."""
        self.lock.acquire()
        stale = remove_stale_temporaries(self.ckpt_dir)
        if stale:
            self.log(f"note: removed {len(stale)} temporary checkpoint file(s) a killed run left in "
                     f"{self.ckpt_dir}")

    def _setup(self, cfg, resume, tensorboard: bool, overwrite: bool, progress: bool) -> None:
        # Every case is checked before the first iteration; all problems in one message.
        distributed.main_decides(lambda: check_training_data(
            cfg, self.data_dir, uses_unlabeled=get_method(cfg.method).uses_unlabeled, progress=self.progress))
        # The networks start from rank 0's draws (DDP broadcasts them); after that each
        # process draws its own noise, time steps and dropout masks.
        self.rank_seed = cfg.seed + self.dist.rank
        seed_everything(self.rank_seed)
        self.method = get_method(cfg.method)(cfg, self.device)
        if self.dist.active and cfg.sync_bn:
            for m in self.method.modules().values():
                distributed.convert_sync_batchnorm(m, self.device)
        self.method.finish_setup()
        for cb in self.callbacks:
            cb.on_setup(self)
        self.optimizer = make_optimizer(self.method.parameters(), cfg.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_epoch, self.best_dice, self.best_epoch = 0, 0.0, 0
        self.history: list[dict] = []
        self.iterations_run = 0
        if cfg.eval_is_train_warning:
            self.log(f"warning: {cfg.eval_is_train_warning}")
        self.loader_l, self.loader_u = make_train_loaders(
            cfg, self.data_dir, require_unlabeled=self.method.uses_unlabeled, rank=self.dist.rank,
            world_size=self.dist.world_size)
        self.eval_ids = read_split(self.data_dir, self.cfg.splits["eval"])
        self.eval_cases = self._load_eval_cases()
        if resume:
            self._resume(Path(resume))
        else:
            distributed.main_decides(lambda: self._check_fresh(overwrite))
        self.step = wrap_for_processes(StepModule(self.method), self.dist, self.device)
        self.writer = None
        if tensorboard and self.is_main:
            from torch.utils.tensorboard import SummaryWriter
            # Steps from the resumed epoch on are purged: a rerun epoch is not logged twice.
            self.writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.start_epoch)

    def _check_fresh(self, overwrite: bool) -> None:
        if (self.ckpt_dir / "last.pth").exists() and not overwrite:
            raise UserError(f"{self.out_dir} already holds a run: pass --resume to continue it, "
                            f"--overwrite to start again, or another --out")
        (self.out_dir / "history.jsonl").unlink(missing_ok=True)

    # ------------------------------------------------------------------ state
    def _load_eval_cases(self):
        """This process's validation cases (every W-th from its rank), with their index in the split."""
        mine = list(range(self.dist.rank, len(self.eval_ids), self.dist.world_size))
        ds = EvalDataset(self.data_dir, [self.eval_ids[i] for i in mine], self.cfg, crop=True, cache=True)
        return [(i, item["image"][None], item["label"]) for i, item in zip(mine, ds)]

    def _payload(self, epoch: int, full: bool, rng_per_rank: list | None = None) -> dict:
        payload = {"state_dict": self.method.model.state_dict(), "config": self.cfg.to_dict(),
                   "method": self.cfg.method, "epoch": epoch, "best_dice": self.best_dice,
                   "best_epoch": self.best_epoch}
        if full:
            payload.update({"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                            "method_state": self.method.extra_state(), "rng": _rng_state(),
                            "history": self.history, "world_size": self.dist.world_size})
            if rng_per_rank is not None:
                payload["rng_per_rank"] = rng_per_rank
        return payload

    def _read_resume_checkpoint(self, path: Path) -> dict:
        if path.is_dir():
            path = path / "ckpts" / "last.pth" if (path / "ckpts").is_dir() else path / "last.pth"
        ckpt = load_checkpoint(path)
        if "optimizer" not in ckpt:
            raise UserError(f"{path} holds weights only; resume needs a 'last.pth' written by 'genericssl train'")
        check_architecture(ckpt["state_dict"], self.cfg, str(path))
        if ckpt.get("method") != self.cfg.method:
            raise UserError(f"{path} was trained with method {ckpt.get('method')!r}, not {self.cfg.method!r}")
        ckpt["path"] = str(path)
        return ckpt

    def _resume(self, path: Path) -> None:
        # Rank 0 reads the file (the other machines of a job need not see rank 0's disk).
        ckpt = distributed.main_decides(lambda: self._read_resume_checkpoint(path))
        self.method.model.load_state_dict(ckpt["state_dict"])
        self.method.load_extra_state(ckpt["method_state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.history = list(ckpt.get("history", []))
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.best_dice, self.best_epoch = float(ckpt["best_dice"]), int(ckpt["best_epoch"])
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world == self.dist.world_size:
            _set_rng_state(ckpt["rng_per_rank"][self.dist.rank] if "rng_per_rank" in ckpt else ckpt["rng"])
        else:
            # Weights, optimizer, schedules and the data order (seed and epoch only) carry
            # over exactly; the per-process random streams cannot, so they start afresh.
            self.rank_seed = int(np.random.SeedSequence([self.cfg.seed, self.dist.rank, self.start_epoch])
                                 .generate_state(1)[0])
            seed_everything(self.rank_seed)
            self.log(f"note: {ckpt['path']} was written by {saved_world} process(es), this run has "
                     f"{self.dist.world_size}: training continues with the same weights, optimizer state and "
                     f"data order, but new random draws (noise, dropout), so it is not bit-identical to an "
                     f"uninterrupted run")
        if self.is_main:
            # Epochs logged after the last checkpoint (a crash mid-epoch) are rerun: drop them.
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        self.log(f"resumed from {ckpt['path']}: continuing at epoch {self.start_epoch} "
                 f"(best val Dice {self.best_dice:.4f} at epoch {self.best_epoch})")

    # ------------------------------------------------------------------ loop
    @torch.no_grad()
    def validate(self) -> tuple[float, list[float]]:
        """Mean over cases, then foreground classes, of hard Dice on the centre patch.

        Each process scores its cases into its rows of one (cases, classes) table; the
        sum over processes is the whole table, the same on every process.
        """
        net = self.method.predictor()
        net.eval()
        C = self.cfg.num_classes
        per_case = torch.zeros(len(self.eval_ids), C - 1)
        for index, image, label in self.eval_cases:
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = net(image.to(self.device))
            pred = logits.argmax(dim=1)[0].cpu()
            per_case[index] = hard_batch_dice(pred, label, C)[1:]
        self.method.train()
        per_class = distributed.all_reduce_sum(per_case).mean(0)
        return float(per_class.mean()), per_class.tolist()

    def _iterations(self):
        if self.method.uses_unlabeled:
            yield from zip(self.loader_l, self.loader_u)
        else:
            for b in self.loader_l:
                yield b, None

    def _train_epoch(self, epoch: int) -> dict:
        for loader in (self.loader_l, self.loader_u):
            if loader is not None and hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
        self.method.train()
        n_iter = len(self.loader_l)
        if self.cfg.iters_per_epoch:
            n_iter = min(n_iter, self.cfg.iters_per_epoch)
        sums: dict[str, torch.Tensor] = {}
        bar = tqdm(total=n_iter, desc=f"epoch {epoch}/{self.cfg.max_epoch}", leave=False,
                   disable=not self.progress, dynamic_ncols=True)
        check_every = 1 if self.device.type == "cpu" else 10
        done = 0
        for i, (bl, bu) in enumerate(self._iterations()):
            if i >= n_iter:
                break
            bl, bu = self.method.prepare_batch(bl), self.method.prepare_batch(bu)
            loss, logs = optimizer_step(self.step, self.method, self.optimizer, self.scaler, bl, bu,
                                        self.amp, self.device.type)
            for k, v in logs.items():
                sums[k] = sums[k] + v.float() if k in sums else v.float().clone()
            done += 1
            self.iterations_run += 1
            if done % check_every == 0 or done == n_iter:
                mean_loss = float(sums["loss"]) / done
                self._check_finite(mean_loss, epoch, i)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            bar.update(1)
            for cb in self.callbacks:
                cb.on_iteration_end(self, epoch, i, logs)
        bar.close()
        if done == 0:
            raise UserError("an epoch ran no iteration: there are fewer cases than one batch "
                            f"(batch_size {self.cfg.batch_size}); lower --batch-size")
        # The epoch's means over the global batch: every process's mean, averaged (in one
        # process the sum is the tensor itself and the division by 1 exact).
        w = self.dist.world_size
        return {k: (distributed.all_reduce_sum(v / done) / w).tolist() for k, v in sums.items()}

    def _check_finite(self, mean_loss: float, epoch: int, i: int) -> None:
        """Every process learns whether any process's loss is non-finite, and all stop together."""
        bad = distributed.ranks_where(not math.isfinite(mean_loss))
        if not bad:
            return
        where = f"the loss became {mean_loss}" if not self.dist.active else (
            f"the loss became non-finite on rank{'s' * (len(bad) > 1)} {', '.join(map(str, bad))} "
            f"of {self.dist.world_size}")
        raise AgreedError(f"{where} at epoch {epoch}, iteration {i}: lower --lr, check the images for extreme "
                          f"values, or resume from {self.ckpt_dir / 'last.pth'} (end of the previous epoch)")

    def _check_ranks(self, record: dict) -> None:
        """Buffers from rank 0 (as DDP hands them out), then proof that the weights agree."""
        if not self.dist.active:
            return
        modules = self.method.modules()
        distributed.broadcast_buffers(modules.values())
        named = [(f"{name}.{k}", p) for name, m in modules.items() for k, p in m.named_parameters()]
        record.update(world_size=self.dist.world_size, param_checksum=distributed.check_identical(named),
                      ranks_identical=True)

    def _save_last(self, epoch: int) -> None:
        rng = distributed.all_gather_object(_rng_state()) if self.dist.active else None
        if self.is_main:
            save_checkpoint(self._payload(epoch, full=True, rng_per_rank=rng), self.ckpt_dir / "last.pth")

    def fit(self) -> dict:
        try:
            return self._fit()
        finally:
            self.lock.release()

    def _fit(self) -> dict:
        cfg = self.cfg
        seeds = distributed.all_gather_object(self.rank_seed)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
            if self.dist.active:
                share = cfg.batch_size // self.dist.world_size
                (self.out_dir / "distributed.json").write_text(json.dumps(
                    {"world_size": self.dist.world_size, "backend": self.dist.backend, "global_batch": cfg.batch_size,
                     "per_process_batch": share, "sync_bn": cfg.sync_bn, "rank_seeds": seeds,
                     "start_epoch": self.start_epoch}, indent=1))
                self.log(f"training in {self.dist.world_size} processes ({self.dist.backend}): global batch "
                         f"{cfg.batch_size}, {share} per process; sync_bn {cfg.sync_bn}; random streams "
                         f"seeded {seeds} (distributed.json)")
        for cb in self.callbacks:
            cb.on_train_start(self)
        t0 = time.time()
        stopped_early = False
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.max_epoch + 1):
            te = time.time()
            for cb in self.callbacks:
                cb.on_epoch_start(self, epoch)
            train_logs = self._train_epoch(epoch)
            self.method.on_epoch_end(epoch)
            lr = poly_lr(cfg.lr, epoch, cfg.max_epoch)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            record = {"epoch": epoch, "lr": lr, "mu": self.method.mu, "seconds": time.time() - te, **train_logs}
            self._check_ranks(record)
            if epoch % cfg.eval_every == 0 or epoch == cfg.max_epoch:
                dice, per_class = self.validate()
                record.update(val_dice=dice, val_dice_per_class=per_class)
                if distributed.broadcast_object(dice > self.best_dice):
                    self.best_dice, self.best_epoch = dice, epoch
                    if self.is_main:
                        save_checkpoint(self._payload(epoch, full=False), self.ckpt_dir / "best_model.pth")
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            self.history.append(record)
            if self.is_main:
                self._write_logs(record)
            self._save_last(epoch)
            self.log(self._epoch_line(record))
            if distributed.broadcast_object(epoch - self.best_epoch >= cfg.patience):
                self.log(f"early stop at epoch {epoch}: no gain for {cfg.patience} epochs")
                stopped_early = True
                break
        if self.is_main:
            if not (self.ckpt_dir / "best_model.pth").exists():
                # No epoch beat 0 Dice: still release something to test, and say so.
                save_checkpoint(self._payload(epoch, full=False), self.ckpt_dir / "best_model.pth")
                self.log("warning: validation Dice never rose above 0; best_model.pth is the last model")
            self._plot()
        if self.writer:
            self.writer.close()
        summary = {"best_dice": self.best_dice, "best_epoch": self.best_epoch, "epochs": epoch + 1,
                   "stopped_early": stopped_early, "seconds": time.time() - t0,
                   "best_checkpoint": str(self.ckpt_dir / "best_model.pth"),
                   "last_checkpoint": str(self.ckpt_dir / "last.pth")}
        if self.dist.active:
            summary["world_size"] = self.dist.world_size
        for cb in self.callbacks:
            cb.on_train_end(self, summary)
        # The files exist for every process once this returns (run tests next).
        distributed.barrier()
        return summary

    # ------------------------------------------------------------------ logs
    @staticmethod
    def _epoch_line(r: dict) -> str:
        parts = [f"epoch {r['epoch']}", f"loss {r['loss']:.4f}", f"lr {r['lr']:.2e}", f"mu {r['mu']:.3f}",
                 f"{r['seconds']:.1f}s"]
        if "val_dice" in r:
            parts.append(f"val Dice {r['val_dice']:.4f}")
        return " | ".join(parts)

    def _write_logs(self, record: dict) -> None:
        with open(self.out_dir / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if not self.writer:
            return
        e = record["epoch"]
        for k, v in record.items():
            if isinstance(v, (int, float)) and k != "epoch":
                self.writer.add_scalar(f"train/{k}" if k not in ("val_dice",) else "val/dice", v, e)
            elif isinstance(v, list):
                for c, x in enumerate(v):
                    self.writer.add_scalar(f"{'val' if k.startswith('val') else 'train'}/{k}_{c}", x, e)
        self.writer.flush()

    def _plot(self) -> None:
        from .plots import plot_curves
        plot_curves(self.history, self.out_dir / "curves.png", title=f"{self.cfg.name} ({self.cfg.method})")
