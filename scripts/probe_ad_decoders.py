"""Which of A&D's decoders would make the best test model? A diagnostic, not a benchmark row.

Trains one `bench accuracy` A&D cell exactly as the benchmark does (same job, same data,
same callback, so D_theta's Dice must reproduce the cached cell's to the digit) and, at
each of the cell's test epochs, tests three more predictors built from the same networks:

- D_psi (the labeled, difficulty-weighted decoder) with the running BatchNorm statistics,
- D_psi with the statistics recomputed from image-path passes (as the ``ad_bn`` row does),
- at the last epoch only, D_xi through the DDIM sampler (10 steps: ~10x a test pass).

Usage (development seeds only; the data must be the calibration folder's):

    python scripts/probe_ad_decoders.py --seed 1000 --out benchmarks/calibration \
        --probe-dir benchmarks/probes

Writes ``<probe-dir>/ssl-ad-seed<seed>.json`` and prints the curves side by side.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genericssl.bench import cells
from genericssl.bench.accuracy import parse_weights, plan_cells
from genericssl.bench.settings import DEV_SEEDS
from genericssl.config import TaskConfig, apply_overrides
from genericssl.data.cases import read_split
from genericssl.data.loaders import EvalDataset
from genericssl.training import Callback, Trainer


class DecoderPsi(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.d_psi(x)


class DiffusionSampler(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.sample(x)  # x0 in [-1, 1] per class: its argmax is the label


class DecoderProbe(Callback):
    def __init__(self, cases, test_epochs, stride, bn_images, last_epoch):
        self.cases, self.test_epochs, self.stride = cases, set(test_epochs), stride
        self.bn_images, self.last_epoch = bn_images, last_epoch
        self.curve = []

    def on_epoch_end(self, trainer, record):
        epoch = record["epoch"]
        if epoch not in self.test_epochs:
            return
        cfg, model = trainer.cfg, trainer.method.model
        score = lambda net: cells._test_scores(net, self.cases, cfg.num_classes, cfg.patch_size,
                                               self.stride, trainer.device)
        row = {"epoch": epoch, "d_theta": record["test"]["dice"], "d_theta_bn": record["test_bn"]["dice"]}
        row["d_psi"] = score(DecoderPsi(model))
        # recompute_batchnorm works on a copy: the training networks keep their statistics
        row["d_psi_bn"] = score(cells.recompute_batchnorm(DecoderPsi(model), self.bn_images, cfg.patch_size,
                                                          seed=cfg.seed + epoch))
        if epoch == self.last_epoch:
            t0 = time.time()
            row["d_xi_sampler"] = score(DiffusionSampler(model))
            row["d_xi_seconds"] = time.time() - t0
        trainer.method.train()
        self.curve.append(row)
        print(f"epoch {epoch:4d}: D_theta {row['d_theta']:6.2f} (bn {row['d_theta_bn']:6.2f})  "
              f"D_psi {row['d_psi']['dice']:6.2f} (bn {row['d_psi_bn']['dice']:6.2f})"
              + (f"  D_xi sampler {row['d_xi_sampler']['dice']:6.2f}" if "d_xi_sampler" in row else ""),
              flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--setting", default="ssl")
    p.add_argument("--out", type=Path, default=Path("benchmarks/calibration"))
    p.add_argument("--probe-dir", type=Path, default=Path("benchmarks/probes"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=None, help="the benchmark's budget unless given (for a smoke test)")
    a = p.parse_args(argv)
    if a.seed not in DEV_SEEDS:
        p.error(f"--seed must be a development seed ({DEV_SEEDS[0]}-{DEV_SEEDS[-1]}): a diagnostic looks at "
                f"test scores, which the confirmatory seeds must not inform")
    torch.set_num_threads(a.threads)
    from genericssl.bench.settings import DEFAULTS
    (job,) = plan_cells([a.setting], ["ad"], [a.seed], a.out, iters=a.iters or DEFAULTS["iters"], size=DEFAULTS["size"],
                        base_filters=None, device="cpu", weights=parse_weights(None))
    cfg = apply_overrides(TaskConfig(), job["cfg"]).validate()
    test_ids = read_split(cfg.data_dir, cfg.splits["test"])
    cases = [(it["image"][0].numpy(), it["label"].numpy()) for it in EvalDataset(cfg.data_dir, test_ids, cfg,
                                                                                 crop=False)]
    train_ids = read_split(cfg.data_dir, cfg.splits["labeled"]) + read_split(cfg.data_dir, cfg.splits["unlabeled"])
    bn_images = [it["image"].numpy() for it in EvalDataset(cfg.data_dir, train_ids, cfg, crop=False,
                                                           need_label=False)]
    epochs = job["budget"]["test_epochs"]
    bench = cells._bench_callback_class()(cases, epochs, job["stride"], bn_images)
    probe = DecoderProbe(cases, epochs, job["stride"], bn_images, job["budget"]["max_epoch"])
    run_dir = a.probe_dir / "runs" / f"{a.setting}-ad-seed{a.seed}"
    trainer = Trainer(cfg, cfg.data_dir, run_dir, "cpu", progress=False, tensorboard=False, overwrite=True,
                      log=lambda *_: None, callbacks=[bench, probe])
    trainer.fit()
    tail = probe.curve[-job["last_k"]:]
    summary = {"setting": a.setting, "seed": a.seed, "cell_key": job["key"], "curve": probe.curve,
               "reported": {k: float(np.mean([r[k] if isinstance(r[k], float) else r[k]["dice"] for r in tail]))
                            for k in ("d_theta", "d_theta_bn", "d_psi", "d_psi_bn")},
               "d_xi_sampler_last": probe.curve[-1]["d_xi_sampler"]}
    cached = Path(job["cell_path"])
    if cached.is_file():
        cell = json.loads(cached.read_text())
        summary["cached_cell_dice"] = cell["dice"] if cell.get("key") == job["key"] else None
    a.probe_dir.mkdir(parents=True, exist_ok=True)
    (a.probe_dir / f"{a.setting}-ad-seed{a.seed}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary.get(k) for k in ("reported", "cached_cell_dice")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
