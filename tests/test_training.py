import json

import pytest
import torch

from genericssl.checkpoint import load_checkpoint
from genericssl.config import TaskConfig, apply_overrides
from genericssl.errors import UserError
from genericssl.training import Trainer, poly_lr
from prepared_data import write_spheres


def write_dataset(root, n=10, size=20, seed=0):
    """Bright spheres in noise: 2 labeled, 4 unlabeled, 2 eval, 2 test cases."""
    return write_spheres(root, n=n, size=size, seed=seed)


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data")


def cfg_for(data, **kw):
    base = dict(data_dir=str(data), patch_size=(16, 16, 16), num_classes=2, base_filters=4, batch_size=2,
                max_epoch=3, num_workers=0, seed=3, patience=100)
    base.update(kw)
    return apply_overrides(TaskConfig(), base).validate()


def test_poly_lr():
    assert poly_lr(0.01, 0, 300) == 0.01
    assert poly_lr(0.01, 150, 300) == pytest.approx(0.01 * 0.5 ** 0.9)


def test_fit_writes_checkpoints_logs_and_resumes_exactly(data, tmp_path):
    cfg = cfg_for(data, max_epoch=2)
    full = Trainer(cfg, data, tmp_path / "full", progress=False, tensorboard=False).fit()
    assert full["epochs"] == 3
    ref = load_checkpoint(tmp_path / "full" / "ckpts" / "last.pth")
    hist = [json.loads(l) for l in (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert hist[0]["lr"] == pytest.approx(0.01) and hist[1]["lr"] == pytest.approx(0.01 * 0.5 ** 0.9)
    assert all(0 <= h["val_dice"] <= 1 and len(h["class_weights"]) == 2 for h in hist)
    best = load_checkpoint(tmp_path / "full" / "ckpts" / "best_model.pth")
    assert "optimizer" not in best and best["config"]["num_classes"] == 2
    assert (tmp_path / "full" / "curves.png").stat().st_size > 1000

    # A run killed during epoch 1 resumes from last.pth and ends where the full run ended.
    crashed = Trainer(cfg, data, tmp_path / "crash", progress=False, tensorboard=False)
    original = crashed._train_epoch

    def dies_in_epoch_1(epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(epoch)

    crashed._train_epoch = dies_in_epoch_1
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert load_checkpoint(tmp_path / "crash" / "ckpts" / "last.pth")["epoch"] == 0
    with pytest.raises(UserError, match="already holds a run"):
        Trainer(cfg, data, tmp_path / "crash", progress=False, tensorboard=False)
    resumed = Trainer(cfg, data, tmp_path / "crash", progress=False, tensorboard=False,
                      resume=tmp_path / "crash")
    assert resumed.start_epoch == 1
    resumed.fit()
    got = load_checkpoint(tmp_path / "crash" / "ckpts" / "last.pth")
    for k, v in ref["state_dict"].items():
        assert torch.allclose(v.float(), got["state_dict"][k].float(), atol=1e-5), k
    assert torch.allclose(ref["method_state"]["difficulty"]["weights"], got["method_state"]["difficulty"]["weights"])


def test_resume_errors(data, tmp_path):
    cfg = cfg_for(data, max_epoch=0)
    with pytest.raises(UserError, match="does not exist"):
        Trainer(cfg, data, tmp_path / "r", progress=False, tensorboard=False, resume=tmp_path / "nope.pth")
    Trainer(cfg, data, tmp_path / "r", progress=False, tensorboard=False).fit()
    other = cfg_for(data, base_filters=8)
    with pytest.raises(UserError, match="base_filters: checkpoint has 4"):
        Trainer(other, data, tmp_path / "r2", progress=False, tensorboard=False,
                resume=tmp_path / "r" / "ckpts" / "last.pth")


def test_nan_loss_stops_with_a_clear_message(data, tmp_path):
    cfg = cfg_for(data, max_epoch=0)
    t = Trainer(cfg, data, tmp_path / "n", progress=False, tensorboard=False)
    real = t.method.train_step

    def nan_step(bl, bu):
        loss, logs = real(bl, bu)
        return loss * float("nan"), {**logs, "loss": logs["loss"] * float("nan")}

    t.method.train_step = nan_step
    with pytest.raises(UserError, match="lower --lr"):
        t.fit()


def test_empty_labeled_split_is_a_clear_error(data, tmp_path):
    (data / "split_txts" / "labeled.txt").write_text("")
    with pytest.raises(UserError, match="labeled"):
        Trainer(cfg_for(data), data, tmp_path / "e", progress=False, tensorboard=False)


def test_supervised_trains_on_labeled_only(data, tmp_path):
    cfg = cfg_for(data, method="supervised", max_epoch=1)
    t = Trainer(cfg, data, tmp_path / "s", progress=False, tensorboard=False)
    t.fit()
    assert t.iterations_run == 2 * (4 // 2)  # labeled repeated to the unlabeled count


def test_supervised_runs_without_an_unlabeled_list(data, tmp_path):
    (data / "split_txts" / "unlabeled.txt").unlink()
    t = Trainer(cfg_for(data, method="supervised", max_epoch=0), data, tmp_path / "s", progress=False,
                tensorboard=False)
    assert t.loader_u is None
    t.fit()
    assert t.iterations_run == 1  # 2 labeled cases, batch 2


def test_callbacks_see_every_epoch_in_order_and_their_record_fields_are_kept(data, tmp_path):
    from genericssl.training import Callback

    events = []

    class Recorder(Callback):
        def on_train_start(self, trainer):
            events.append("start")

        def on_epoch_start(self, trainer, epoch):
            events.append(("epoch", epoch))

        def on_iteration_end(self, trainer, epoch, iteration, logs):
            events.append(("iter", epoch))

        def on_epoch_end(self, trainer, record):
            events.append(("end", record["epoch"]))
            record["seen_by_callback"] = len(trainer.history)     # the record is not in the history yet

        def on_train_end(self, trainer, summary):
            events.append("done")

    Trainer(cfg_for(data, max_epoch=1), data, tmp_path / "cb", progress=False, tensorboard=False,
            callbacks=[Recorder()]).fit()
    assert events[0] == "start" and events[-1] == "done"
    body = events[1:-1]
    for epoch in (0, 1):
        mine = [e for e in body if e[1] == epoch]
        assert mine[0] == ("epoch", epoch) and mine[-1] == ("end", epoch) and ("iter", epoch) in mine
    assert body.index(("end", 0)) < body.index(("epoch", 1))
    hist = [json.loads(l) for l in (tmp_path / "cb" / "history.jsonl").read_text().splitlines()]
    assert [h["seen_by_callback"] for h in hist] == [0, 1]
