"""Training fails safely and says why: every bad case at once before the first iteration,
one-line messages from loader workers, one run per folder, full disks, stale temporaries,
TensorBoard on resume, checkpoint permissions."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from genericssl.cli import main
from genericssl.errors import UserError, worker_message
from genericssl.runlock import LOCK_NAME, RunLock
from genericssl.training import Trainer
from test_training import cfg_for, write_dataset


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "data")


def _train_cli(capsys, data, out, *extra):
    code = main(["train", "--data-dir", str(data), "--patch-size", "16x16x16", "--base-filters", "4",
                 "--batch-size", "2", "--num-classes", "2", "--max-epoch", "0", "--num-workers", "0",
                 "--no-progress", "--out", str(out), *map(str, extra)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _break(data):
    """One case per class of problem; returns {what: file}."""
    npy = data / "npy"
    (npy / "case00_image.npy").unlink()                                   # labeled: missing image
    np.save(npy / "case01_label.npy", np.zeros((20, 20, 19), np.uint8))   # labeled: shape mismatch
    lab = np.load(npy / "case02_label.npy")
    lab[0, 0, 0] = 7
    np.save(npy / "case02_label.npy", lab)                                # unlabeled? out-of-range label
    img = np.load(npy / "case03_image.npy")
    img[1, 2, 3] = np.nan
    np.save(npy / "case03_image.npy", img)                                # NaN image
    raw = (npy / "case06_image.npy").read_bytes()
    (npy / "case06_image.npy").write_bytes(raw[: len(raw) // 2])          # eval: truncated
    return {"missing": npy / "case00_image.npy", "shape": npy / "case01_label.npy",
            "nan": npy / "case03_image.npy", "truncated": npy / "case06_image.npy"}


def test_every_bad_case_is_reported_at_once_before_training(data, tmp_path, capsys):
    bad = _break(data)
    code, out, err = _train_cli(capsys, data, tmp_path / "run")
    assert code == 2 and "Traceback" not in err, err
    assert "cannot be used" in err
    assert f"{bad['missing']} does not exist" in err
    assert f"{bad['shape']}: label shape [20, 20, 19] differs" in err
    assert f"{bad['nan']}: image holds 1 NaN" in err
    assert f"{bad['truncated']} cannot be read" in err
    # Nothing was trained, and no lock is left behind.
    assert not (tmp_path / "run" / "ckpts" / "last.pth").exists()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_label_out_of_range_names_the_file_and_the_values(data, tmp_path, capsys):
    path = data / "npy" / "case00_label.npy"   # a labeled case
    lab = np.load(path)
    lab[0, 0, 0] = 7
    np.save(path, lab)
    code, _, err = _train_cli(capsys, data, tmp_path / "run")
    assert code == 2 and f"{path}: label values [7] are outside 0..1" in err and "Traceback" not in err


def test_an_error_in_a_loader_worker_reads_as_the_main_process_message():
    from torch.utils.data import DataLoader, Dataset

    class Bad(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i == 2:
                raise UserError("/data/npy/c2_image.npy: cannot be read")
            return i

    with pytest.raises(UserError) as e:
        list(DataLoader(Bad(), num_workers=2))
    assert str(e.value) == "/data/npy/c2_image.npy: cannot be read"
    assert worker_message("plain message") == "plain message"


def test_a_second_run_into_the_same_folder_is_refused(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    # A live owner: this test's parent process, on this host.
    import socket
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                             "started": "2026-12-02 10:00:00"}))
    code, _, err = _train_cli(capsys, data, out)
    assert code == 2 and "is in use by another genericssl run" in err and f"pid {os.getppid()}" in err
    assert not (out / "ckpts").exists()
    # A stale owner (a pid that has exited) is taken over with a note.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    code, text, err = _train_cli(capsys, data, out)
    assert code == 0, err
    assert "taking over the stale lock" in text
    assert not (out / LOCK_NAME).exists()   # released at the end


def test_another_hosts_lock_says_how_to_remove_it(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(UserError, match="delete .*genericssl.lock"):
        RunLock(tmp_path).acquire()


def test_unwritable_output_folders_are_one_clear_message(data, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = _train_cli(capsys, data, tmp_path / "afile")
    assert code == 2 and "a file of that name is in the way" in err and "Traceback" not in err
    code, _, err = _train_cli(capsys, data, tmp_path / "afile" / "run")
    assert code == 2 and str(tmp_path / "afile" / "run") in err and "Traceback" not in err


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    Trainer(cfg_for(data, max_epoch=0), data, out, progress=False, tensorboard=False).fit()
    before = (out / "ckpts" / "last.pth").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    t = Trainer(cfg_for(data, max_epoch=1), data, out, progress=False, tensorboard=False,
                resume=out / "ckpts" / "last.pth")
    with pytest.raises(UserError) as e:
        t.fit()
    msg = str(e.value)
    assert "no space left on" in msg and str(out / "ckpts") in msg and "previous checkpoint is intact" in msg
    assert "--resume" in msg
    assert (out / "ckpts" / "last.pth").read_bytes() == before
    assert not list((out / "ckpts").glob(".*.tmp"))
    assert not (out / LOCK_NAME).exists()


def test_stale_temporaries_removed_and_checkpoints_readable_by_others(data, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "ckpts").mkdir(parents=True)
    stale = out / "ckpts" / ".last.pth.k2j3h4.tmp"
    stale.write_bytes(b"half a checkpoint")
    old = os.umask(0o022)
    try:
        Trainer(cfg_for(data, max_epoch=0), data, out, progress=False, tensorboard=False,
                overwrite=True).fit()
    finally:
        os.umask(old)
    assert not stale.exists()
    assert "removed 1 temporary checkpoint" in capsys.readouterr().out
    for name in ("last.pth", "best_model.pth"):
        assert (out / "ckpts" / name).stat().st_mode & 0o777 == 0o644
    assert (out / "history.jsonl").stat().st_mode & 0o777 == 0o644


def test_a_resumed_run_leaves_no_duplicate_tensorboard_points(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    Trainer(cfg_for(data, max_epoch=1), data, out, progress=False).fit()
    # As after a crash in epoch 1: the checkpoint says epoch 0, TensorBoard has epochs 0 and 1.
    ck = torch.load(out / "ckpts" / "last.pth", weights_only=True)
    Trainer(cfg_for(data, max_epoch=0), data, tmp_path / "e0", progress=False, tensorboard=False).fit()
    (out / "ckpts" / "last.pth").write_bytes((tmp_path / "e0" / "ckpts" / "last.pth").read_bytes())
    assert ck["epoch"] == 1
    Trainer(cfg_for(data, max_epoch=1), data, out, progress=False, resume=out / "ckpts" / "last.pth").fit()
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == [0, 1], steps
