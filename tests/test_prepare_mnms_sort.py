"""`genericssl prepare mnms-sort`: OpenDataset -> MNMs/Labeled/Vendor{A..D} by the spreadsheet."""
import os

import pytest

from genericssl.cli import main as cli
from genericssl.errors import UserError
from genericssl.prepare import mnms, mnms_sort
from prepare_fixtures import mnms_subject, write_info_csv, write_info_xls, write_mnms_subject

# (folder under OpenDataset, subject, vendor in the spreadsheet)
LAYOUT = [("Training/Labeled", "A1A1A1", "A"), ("Training/Labeled", "B1B1B1", "B"),
          ("Training/Labeled", "A2A2A2", "A"), ("Training/Unlabeled", "C9C9C9", "C"),
          ("Validation", "C1C1C1", "C"), ("Validation", "D1D1D1", "D"), ("Validation", "B2B2B2", "B"),
          ("Testing", "C2C2C2", "C"), ("Testing", "D2D2D2", "D"), ("Testing", "X0X0X0", None)]


def make_open_dataset(root, info="csv"):
    for i, (folder, sid, _) in enumerate(LAYOUT):
        write_mnms_subject(root / folder, sid, *mnms_subject(i))
    rows = [(sid, v) for _, sid, v in LAYOUT if v]
    if info == "csv":
        write_info_csv(root / "mnms_dataset_info.csv", rows)
    return rows


def test_sort_then_prepare(tmp_path, capsys):
    raw = tmp_path / "OpenDataset"
    make_open_dataset(raw)
    assert cli(["prepare", "mnms-sort", "--raw", str(raw), "--out", str(tmp_path / "MNMs")]) == 0
    out = capsys.readouterr().out
    labeled = tmp_path / "MNMs" / "Labeled"
    assert sorted(p.name for p in labeled.iterdir()) == ["VendorA", "VendorB", "VendorC", "VendorD"]
    assert sorted(p.name for p in (labeled / "VendorC").iterdir()) == ["C1C1C1", "C2C2C2"]  # not Unlabeled's C9
    assert "X0X0X0" in out and "not in the spreadsheet" in out
    src = raw / "Testing" / "D2D2D2" / "D2D2D2_sa.nii.gz"
    dst = labeled / "VendorD" / "D2D2D2" / "D2D2D2_sa.nii.gz"
    assert src.is_file() and os.path.samefile(src, dst)  # hard-linked, the download left as it was
    assert mnms_sort.sort_dataset(raw, tmp_path / "MNMs") == 0  # a re-run is harmless
    assert mnms.prepare(tmp_path / "MNMs", tmp_path / "MNMS_data", seed=0) == 0
    vendor_c = (tmp_path / "MNMS_data" / "split_txts" / "vendorC.txt").read_text().split()
    assert vendor_c == ["C1C1C1_sa", "C2C2C2_sa"]


def test_copy_and_move_modes(tmp_path):
    raw = tmp_path / "OpenDataset"
    make_open_dataset(raw)
    mnms_sort.sort_dataset(raw, tmp_path / "copied", mode="copy")
    dst = tmp_path / "copied" / "Labeled" / "VendorA" / "A1A1A1" / "A1A1A1_sa.nii.gz"
    assert dst.read_bytes() == (raw / "Training/Labeled/A1A1A1/A1A1A1_sa.nii.gz").read_bytes()
    assert not os.path.samefile(dst, raw / "Training/Labeled/A1A1A1/A1A1A1_sa.nii.gz")
    mnms_sort.sort_dataset(raw, tmp_path / "moved", mode="move")
    assert not (raw / "Training/Labeled/A1A1A1/A1A1A1_sa.nii.gz").exists()
    assert (tmp_path / "moved" / "Labeled" / "VendorA" / "A1A1A1" / "A1A1A1_sa_gt.nii.gz").is_file()


def test_xls_spreadsheet_as_released(tmp_path):
    pytest.importorskip("xlwt")
    rows = [("A1A1A1", "A"), ("C1C1C1", "C"), ("Z9Z9Z9", "E")]
    info = mnms_sort.read_info(write_info_xls(tmp_path / "mnms_dataset_info.xls", rows))
    assert info == {"A1A1A1": "A", "C1C1C1": "C"}


def test_spreadsheet_given_with_info(tmp_path):
    raw = tmp_path / "OpenDataset"
    make_open_dataset(raw, info=None)
    with pytest.raises(UserError, match="--info"):
        mnms_sort.sort_dataset(raw, tmp_path / "MNMs")
    info = write_info_csv(tmp_path / "elsewhere.csv", [("A1A1A1", "A"), ("D1D1D1", "D")])
    assert mnms_sort.sort_dataset(raw, tmp_path / "MNMs", info=info) == 0
    assert sorted(p.name for p in (tmp_path / "MNMs" / "Labeled").iterdir()) == ["VendorA", "VendorD"]


def test_unreadable_spreadsheet_is_named(tmp_path, capsys):
    bad = tmp_path / "mnms_dataset_info.xls"
    bad.write_bytes(b"\x00 this is not a spreadsheet")
    with pytest.raises(UserError, match="cannot read the spreadsheet .*mnms_dataset_info.xls"):
        mnms_sort.read_info(bad)
    headerless = tmp_path / "info.csv"
    headerless.write_text("A1A1A1,A\n")
    with pytest.raises(UserError, match="External code"):
        mnms_sort.read_info(headerless)
