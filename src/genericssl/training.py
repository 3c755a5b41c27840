"""The training loop: epochs, validation, checkpoints, resume, logging.

It knows the ``Method`` interface and nothing about A&D in particular. Schedules
follow METHOD.md: epochs run 0..E inclusive; after epoch e's training the learning
rate becomes base (1 - e/E)^0.9 and the method's unlabeled weight w_u r(e); the
model is validated (D_theta, eval mode, centre crop) after every epoch, saved when
strictly better, and training stops when ``patience`` epochs pass without a gain.
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

from .devices import resolve_device
from .checkpoint import check_architecture, load_checkpoint, save_checkpoint
from .config import TaskConfig
from .data.loaders import EvalDataset, make_train_loaders
from .data.cases import read_split
from .errors import UserError
from .losses import hard_batch_dice
from .methods import get_method


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


class Trainer:
    """Train ``cfg.method`` on the prepared dataset in ``data_dir``; write to ``out_dir``.

    ``out_dir`` receives ``ckpts/best_model.pth`` (the released model; our format is a
    superset of the authors'), ``ckpts/last.pth`` (everything needed to resume),
    ``history.jsonl``, ``config.yaml``, TensorBoard scalars in ``tb/`` and
    ``curves.png``.
    """

    def __init__(self, cfg: TaskConfig, data_dir: str | Path, out_dir: str | Path, device: str = "auto",
                 resume: str | Path | None = None, progress: bool = True, tensorboard: bool = True,
                 overwrite: bool = False, log=print):
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.device = resolve_device(device)
        self.progress = progress
        self.log = log
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.ckpt_dir = self.out_dir / "ckpts"
        if not self.data_dir.is_dir():
            raise UserError(f"data folder {self.data_dir} does not exist (set --data-dir, or run "
                            f"'genericssl prepare' first)")
        seed_everything(cfg.seed)
        self.method = get_method(cfg.method)(cfg, self.device)
        self.method.finish_setup()
        self.optimizer = torch.optim.SGD(self.method.parameters(), lr=cfg.lr, momentum=0.9,
                                         nesterov=True, weight_decay=3e-5)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_epoch, self.best_dice, self.best_epoch = 0, 0.0, 0
        self.history: list[dict] = []
        self.iterations_run = 0
        if cfg.eval_is_train_warning:
            log(f"warning: {cfg.eval_is_train_warning}")
        self.loader_l, self.loader_u = make_train_loaders(cfg, self.data_dir,
                                                          require_unlabeled=self.method.uses_unlabeled)
        self.eval_cases = self._load_eval_cases()
        if resume:
            self._resume(Path(resume))
        elif (self.ckpt_dir / "last.pth").exists() and not overwrite:
            raise UserError(f"{self.out_dir} already holds a run: pass --resume to continue it, "
                            f"--overwrite to start again, or another --out")
        else:
            (self.out_dir / "history.jsonl").unlink(missing_ok=True)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out_dir / "tb"))

    # ------------------------------------------------------------------ state
    def _load_eval_cases(self):
        ids = read_split(self.data_dir, self.cfg.splits["eval"])
        ds = EvalDataset(self.data_dir, ids, self.cfg, crop=True, cache=True)
        return [(item["id"], item["image"][None], item["label"]) for item in ds]

    def _payload(self, epoch: int, full: bool) -> dict:
        payload = {"state_dict": self.method.model.state_dict(), "config": self.cfg.to_dict(),
                   "method": self.cfg.method, "epoch": epoch, "best_dice": self.best_dice,
                   "best_epoch": self.best_epoch}
        if full:
            payload.update({"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                            "method_state": self.method.extra_state(), "rng": _rng_state(),
                            "history": self.history})
        return payload

    def _resume(self, path: Path) -> None:
        if path.is_dir():
            path = path / "ckpts" / "last.pth" if (path / "ckpts").is_dir() else path / "last.pth"
        ckpt = load_checkpoint(path)
        if "optimizer" not in ckpt:
            raise UserError(f"{path} holds weights only; resume needs a 'last.pth' written by 'genericssl train'")
        check_architecture(ckpt["state_dict"], self.cfg, str(path))
        if ckpt.get("method") != self.cfg.method:
            raise UserError(f"{path} was trained with method {ckpt.get('method')!r}, not {self.cfg.method!r}")
        self.method.model.load_state_dict(ckpt["state_dict"])
        self.method.load_extra_state(ckpt["method_state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        self.history = list(ckpt.get("history", []))
        # Epochs logged after the last checkpoint (a crash mid-epoch) are rerun: drop them.
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.best_dice, self.best_epoch = float(ckpt["best_dice"]), int(ckpt["best_epoch"])
        self.log(f"resumed from {path}: continuing at epoch {self.start_epoch} "
                 f"(best val Dice {self.best_dice:.4f} at epoch {self.best_epoch})")

    # ------------------------------------------------------------------ loop
    @torch.no_grad()
    def validate(self) -> tuple[float, list[float]]:
        """Mean over cases, then foreground classes, of hard Dice on the centre patch."""
        net = self.method.predictor()
        net.eval()
        C = self.cfg.num_classes
        per_case = []
        for _, image, label in self.eval_cases:
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = net(image.to(self.device))
            pred = logits.argmax(dim=1)[0].cpu()
            per_case.append(hard_batch_dice(pred, label, C)[1:])
        self.method.train()
        per_class = torch.stack(per_case).mean(0)
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
            with torch.autocast(self.device.type, enabled=self.amp):
                loss, logs = self.method.train_step(bl, bu)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.method.after_step()
            for k, v in logs.items():
                sums[k] = sums[k] + v.float() if k in sums else v.float().clone()
            done += 1
            self.iterations_run += 1
            if done % check_every == 0 or done == n_iter:
                mean_loss = float(sums["loss"]) / done
                if not math.isfinite(mean_loss):
                    raise UserError(
                        f"the loss became {mean_loss} at epoch {epoch}, iteration {i}: lower --lr, check the "
                        f"images for extreme values, or resume from {self.ckpt_dir / 'last.pth'} (end of the "
                        f"previous epoch)")
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            bar.update(1)
        bar.close()
        if done == 0:
            raise UserError("an epoch ran no iteration: there are fewer cases than one batch "
                            f"(batch_size {self.cfg.batch_size}); lower --batch-size")
        return {k: (v / done).tolist() for k, v in sums.items()}

    def fit(self) -> dict:
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        t0 = time.time()
        stopped_early = False
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.max_epoch + 1):
            te = time.time()
            train_logs = self._train_epoch(epoch)
            self.method.on_epoch_end(epoch)
            lr = poly_lr(cfg.lr, epoch, cfg.max_epoch)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            record = {"epoch": epoch, "lr": lr, "mu": self.method.mu, "seconds": time.time() - te, **train_logs}
            if epoch % cfg.eval_every == 0 or epoch == cfg.max_epoch:
                dice, per_class = self.validate()
                record.update(val_dice=dice, val_dice_per_class=per_class)
                if dice > self.best_dice:
                    self.best_dice, self.best_epoch = dice, epoch
                    save_checkpoint(self._payload(epoch, full=False), self.ckpt_dir / "best_model.pth")
            self.history.append(record)
            self._write_logs(record)
            save_checkpoint(self._payload(epoch, full=True), self.ckpt_dir / "last.pth")
            self.log(self._epoch_line(record))
            if epoch - self.best_epoch >= cfg.patience:
                self.log(f"early stop at epoch {epoch}: no gain for {cfg.patience} epochs")
                stopped_early = True
                break
        if not (self.ckpt_dir / "best_model.pth").exists():
            # No epoch beat 0 Dice: still release something to test, and say so.
            save_checkpoint(self._payload(epoch, full=False), self.ckpt_dir / "best_model.pth")
            self.log("warning: validation Dice never rose above 0; best_model.pth is the last model")
        self._plot()
        if self.writer:
            self.writer.close()
        return {"best_dice": self.best_dice, "best_epoch": self.best_epoch, "epochs": epoch + 1,
                "stopped_early": stopped_early, "seconds": time.time() - t0,
                "best_checkpoint": str(self.ckpt_dir / "best_model.pth"),
                "last_checkpoint": str(self.ckpt_dir / "last.pth")}

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
