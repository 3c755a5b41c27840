"""`genericssl prepare synthetic`: a synthetic prepared dataset and a task file that trains on it.

The data come from the generator the demo and the accuracy benchmark use
(:mod:`genericssl.data.synthetic`), with their settings: ``demo`` is the demo's task
and its small training settings (``commands/demo.py``); every other setting is a
setting of ``genericssl bench accuracy`` (``bench/settings.py``) with the training
fields of its A&D cell (filters, batch, learning rate, iteration budget, ramp-up).
``OUT/task.yaml`` holds all of them, ``data_dir`` the absolute OUT, so that
``genericssl train --config OUT/task.yaml --out RUN`` needs nothing else. A setting
with one task per held-out domain (semidg) writes each as ``OUT/tasks/<name>.yaml``
and the first as ``OUT/task.yaml``.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import UserError
from .common import write_text

MIN_SIZE = 16  # the smallest patch the network takes (four 2x downsamplings)
DEFAULT_SIZE = 48


def setting_names() -> list[str]:
    from ..bench.settings import SETTINGS

    return ["demo", *SETTINGS]


def spec_for(setting: str, seed: int, size: int):
    """The generator's spec of ``setting``: the demo's, or a benchmark setting's (with its
    case-to-case anatomy variation and spread: the data `bench accuracy` trains on)."""
    from ..bench.settings import SETTINGS
    from ..data.synthetic import named_spec

    if setting == "demo":
        return named_spec("demo", seed=seed, size=size)
    if setting not in SETTINGS:
        raise UserError(f"unknown synthetic setting {setting!r}; choose from {', '.join(setting_names())}")
    bench = SETTINGS[setting]
    return bench.make_spec(seed, size)


def training_fields(setting: str, task: dict, splits: dict, seed: int) -> dict:
    """TaskConfig fields of ``task`` (the generator's) plus the training settings of ``setting``."""
    if setting == "demo":
        from ..commands.demo import DEMO_SETTINGS

        return {**task, **DEMO_SETTINGS, "seed": seed}
    from ..bench.cells import budget_for, cell_config
    from ..bench.settings import DEFAULTS, UNSUP_WEIGHTS

    budget = budget_for(task, splits, DEFAULTS["iters"], DEFAULTS["batch_size"], DEFAULTS["rampup_fraction"],
                        DEFAULTS["test_points"])
    fields = cell_config(task, "ad", seed, budget, DEFAULTS["base_filters"], DEFAULTS["batch_size"],
                         DEFAULTS["lr"], UNSUP_WEIGHTS)
    return {**fields, "name": task["name"]}  # the task's name, not the benchmark cell's


def _checked(fields: dict, where: Path) -> dict:
    from ..config import TaskConfig, apply_overrides

    try:
        apply_overrides(TaskConfig(), fields).validate()
    except UserError as e:
        raise UserError(f"{where}: the generated task does not validate: {e}") from None
    return fields


def prepare(out, *, setting: str, seed: int = 0, size: int = DEFAULT_SIZE) -> int:
    from ..data.synthetic import make_synthetic_dataset

    if size < MIN_SIZE:
        raise UserError(f"--size {size}: volumes need at least {MIN_SIZE} voxels per edge (the smallest patch)")
    out = Path(out).absolute()
    summary = make_synthetic_dataset(out, spec_for(setting, seed, size))
    tasks = {name: _checked(training_fields(setting, task, summary["splits"], seed), out / "tasks" / f"{name}.yaml")
             for name, task in summary["tasks"].items()}
    # The generator wrote the bare tasks; these replace them with the training settings added.
    for name, fields in tasks.items():
        write_text(out / "tasks" / f"{name}.yaml", yaml.safe_dump(fields, sort_keys=False))
    first = next(iter(tasks.values()))
    write_text(out / "task.yaml", yaml.safe_dump(first, sort_keys=False))
    _report(out, setting, seed, summary, tasks)
    return 0


def _report(out: Path, setting: str, seed: int, summary: dict, tasks: dict) -> None:
    first = next(iter(tasks.values()))
    cases = sum(n for roles in summary["cases"].values() for n in roles.values())
    print(f"synthetic {setting} (seed {seed}): {cases} cases of {'x'.join(map(str, summary['shape']))} in "
          f"{out / 'npy'}, {summary['num_classes']} classes, patch {'x'.join(map(str, first['patch_size']))}")
    print("splits: " + ", ".join(f"{k} {n}" for k, n in summary["splits"].items()))
    if len(tasks) > 1:
        print(f"tasks: {', '.join(tasks)} in {out / 'tasks'}; task.yaml is {first['name']}")
    print(f"task config: {out / 'task.yaml'}; train with: genericssl train --config {out / 'task.yaml'} --out RUN")
