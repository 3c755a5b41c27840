"""Sort the released M&Ms ``OpenDataset`` into ``MNMs/Labeled/Vendor{A..D}/<ID>/``.

The vendor of each subject comes from the dataset information spreadsheet
(``mnms_dataset_info.xls`` as released, or a .csv export), columns "External
code" and "Vendor". Subjects are taken from Training/Labeled, Validation and
Testing (Training/Unlabeled has no labels and is not used). Files are hard-linked
by default (no extra disk, the download untouched), copied where links are not
possible; ``mode="copy"`` or ``"move"`` on request.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from ..errors import UserError
from ..optional import require
from .common import atomic_write

SOURCES = (("training", "labeled"), ("validation",), ("testing",))
VENDORS = "ABCD"


def _child(folder: Path, name: str) -> Path | None:
    if not folder.is_dir():
        return None
    return next((p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name), None)


def find_info(raw: Path) -> Path:
    found = sorted(p for p in raw.iterdir() if p.suffix.lower() in (".xls", ".xlsx", ".csv"))
    if not found:
        raise UserError(f"{raw}: no dataset information spreadsheet (mnms_dataset_info.xls); pass --info FILE")
    return next((p for p in found if "info" in p.name.lower()), found[0])


def _rows(path: Path) -> list[list]:
    is_csv = path.suffix.lower() == ".csv"
    # Outside the try: a missing xlrd is its own message, not "cannot read the spreadsheet".
    xlrd = None if is_csv else require("xlrd", f"reading the M&Ms spreadsheet {path.name}")
    try:
        if is_csv:
            with open(path, newline="", encoding="utf-8-sig") as f:
                return [row for row in csv.reader(f)]
        sheet = xlrd.open_workbook(str(path)).sheet_by_index(0)
        return [sheet.row_values(i) for i in range(sheet.nrows)]
    except Exception as e:  # xlrd, csv and decoding errors all mean the same to the user
        hint = " (xlrd reads .xls only: save the sheet as .xls or .csv)" if path.suffix.lower() == ".xlsx" else ""
        raise UserError(f"cannot read the spreadsheet {path}: {type(e).__name__}: {e}{hint}") from None


def read_info(path: Path) -> dict[str, str]:
    """Subject code -> vendor letter."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spreadsheet {path} does not exist")
    rows = _rows(path)
    for i, row in enumerate(rows):
        names = [str(c).strip().lower() for c in row]
        if "external code" in names and "vendor" in names:
            code_col, vendor_col = names.index("external code"), names.index("vendor")
            break
    else:
        raise UserError(f"spreadsheet {path}: no header row with the columns 'External code' and 'Vendor'")
    info, bad = {}, []
    for row in rows[i + 1:]:
        cells = [str(c).strip() for c in row] + [""] * (max(code_col, vendor_col) + 1 - len(row))
        code, vendor = cells[code_col], cells[vendor_col].upper()
        if not code:
            continue
        if vendor in VENDORS and vendor:
            info[code] = vendor
        else:
            bad.append(f"{code} ({vendor or 'empty'})")
    if bad:
        print(f"spreadsheet {path}: vendor not A-D for {len(bad)} row(s), left out: {', '.join(bad[:10])}")
    if not info:
        raise UserError(f"spreadsheet {path}: no subject rows with a vendor A-D")
    return info


def _place(src: Path, dst: Path, mode: str) -> None:
    if mode == "move":
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
        return

    def write(f):
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)

    if mode == "link":
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            return
        except OSError:  # another filesystem, or links not allowed: copy instead
            if tmp.exists():
                tmp.unlink()
    atomic_write(dst, write)


def sort_dataset(raw, out, *, info=None, mode: str = "link", force: bool = False) -> int:
    from tqdm import tqdm

    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise UserError(f"--raw {raw}: no such folder")
    vendor_of = read_info(Path(info) if info else find_info(raw))
    subjects = []
    for parts in SOURCES:
        folder = raw
        for name in parts:
            folder = _child(folder, name)
            if folder is None:
                break
        if folder is None:
            print(f"note: {raw}/{'/'.join(p.capitalize() for p in parts)} not found; skipped")
            continue
        subjects += sorted(p for p in folder.iterdir() if p.is_dir())
    if not subjects:
        raise UserError(f"{raw}: no subject folders under Training/Labeled, Validation or Testing")
    unknown, counts, placed = [], {v: 0 for v in VENDORS}, 0
    for subj in tqdm(subjects, desc="M&Ms sort", unit="subject"):
        vendor = vendor_of.get(subj.name)
        if vendor is None:
            unknown.append(subj.name)
            continue
        dst_dir = out / "Labeled" / f"Vendor{vendor}" / subj.name
        for f in sorted(p for p in subj.iterdir() if p.is_file()):
            dst = dst_dir / f.name
            if force or not dst.is_file() or dst.stat().st_size != f.stat().st_size:
                _place(f, dst, mode)
                placed += 1
        counts[vendor] += 1
    print(f"M&Ms sorted into {out / 'Labeled'}: " + ", ".join(f"Vendor{v} {n}" for v, n in counts.items())
          + f" subjects ({placed} files {'moved' if mode == 'move' else 'placed'})")
    if unknown:
        print(f"not in the spreadsheet, left out ({len(unknown)}): {', '.join(unknown[:20])}")
    return 0 if sum(counts.values()) else 1
