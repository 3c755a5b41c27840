"""Reading scans and writing label maps: NIfTI (nibabel), NRRD and MHA/MHD (SimpleITK)
and prepared ``.npy`` arrays.

Geometry, in one place: every scan's grid is a NIfTI-style affine (voxel index
(x, y, z) -> RAS+ millimetres, nibabel's convention), whatever its format.
SimpleITK's images are LPS (origin, spacing, direction); :func:`sitk_affine` and
:func:`sitk_geometry` convert, so an NRRD scan and a NIfTI copy of it have the same
affine and a label map written in either format lies on the scan.

Array axes, in one place: nibabel gives NIfTI data as (x, y, z); the prepared
arrays our presets train on are (z, y, x) (SimpleITK's order, which the authors
used), except LA, whose HDF5 volumes are (x, y, z). A prepared dataset states
its order in ``dataset.json`` (``"axes": "xyz"`` or ``"zyx"``).

Every failure to read is a :class:`UserError` that names the file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

NIFTI_EXTS = (".nii.gz", ".nii")
SITK_EXTS = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}
SCAN_EXTS = NIFTI_EXTS + tuple(SITK_EXTS)
FORMAT_EXT = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}
AXES = ("xyz", "zyx")
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)


# ------------------------------------------------------------------ names
def kind_of(path: str | Path) -> str | None:
    """``"nifti"``, ``"nrrd"``, ``"mha"``, ``"npy"`` or None (not something we read)."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_EXTS):
        return "nifti"
    for ext, kind in SITK_EXTS.items():
        if name.endswith(ext):
            return kind
    if name.endswith(".npy"):
        return "npy"
    return None


def stem_of(path: str | Path) -> str:
    """File name without its scan extension (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd, .npy)."""
    name = Path(path).name
    for ext in SCAN_EXTS + (".npy",):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


# ------------------------------------------------------------------ axes
def dataset_axes(dataset: str | None, data_dir: str | Path | None = None) -> str:
    """Axis order of a dataset's prepared arrays: ``dataset.json``'s "axes" when there is
    one, else the convention ("xyz" for LA, "zyx" for every other dataset)."""
    if data_dir is not None:
        path = Path(data_dir) / "dataset.json"
        if path.is_file():
            try:
                axes = json.loads(path.read_text()).get("axes")
            except (OSError, ValueError):
                axes = None
            if axes in AXES:
                return axes
    return "xyz" if dataset == "la" else "zyx"


def to_array_axes(data_xyz: np.ndarray, axes: str) -> np.ndarray:
    """NIfTI (x, y, z[, ...]) -> the model's array order; trailing axes (time) stay last."""
    if axes not in AXES:
        raise ValueError(f"axes must be one of {AXES}, got {axes!r}")
    if axes == "xyz":
        return data_xyz
    order = (2, 1, 0) + tuple(range(3, data_xyz.ndim))
    return data_xyz.transpose(order)


def from_array_axes(data: np.ndarray, axes: str) -> np.ndarray:
    """Inverse of :func:`to_array_axes` (the transpose is its own inverse)."""
    return to_array_axes(data, axes)


# ------------------------------------------------------------------ reading
NPY_MAGIC = b"\x93NUMPY"


def _npy_dtype(path: Path):
    """The dtype an .npy header declares, or None when the header cannot be read."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            return read(f)[2]
    except Exception:  # a header this old reader cannot parse: the caller says "corrupt"
        return None


def load_npy(path: str | Path) -> np.ndarray:
    """``np.load`` of a numeric array, never unpickling; a :class:`UserError` that names the
    file and what is wrong with it. (numpy itself calls any file without the .npy header
    "pickled (object) data", which sends the user looking for the wrong problem.)"""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if head != NPY_MAGIC:
        what = "the file is empty" if not head else "it does not start with the .npy header"
        raise UserError(f"{path} is not a NumPy .npy file ({what}: a text file or another format saved "
                        f"under an .npy name?); write it with numpy.save") from None
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # ValueError, EOFError, OSError: a short or damaged file
        dtype = _npy_dtype(path)
        if dtype is not None and dtype.hasobject:
            raise UserError(f"{path} holds Python objects (dtype {dtype}), not a numeric array; "
                            f"save the array itself (e.g. numpy.save(path, arr.astype(numpy.uint8)))") from None
        raise UserError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); write it again") from None


@dataclass
class Volume:
    """One input file. ``data`` is as stored: NIfTI (x, y, z[, t]), npy as saved."""
    path: Path
    kind: str
    data: np.ndarray
    affine: np.ndarray | None = None
    header: Any = None
    image_class: Any = None
    extra: dict = field(default_factory=dict)


def sitk_affine(spacing, origin, direction) -> np.ndarray:
    """The RAS affine of a SimpleITK grid (its first three axes)."""
    n = int(round(len(direction) ** 0.5))
    d = np.asarray(direction, np.float64).reshape(n, n)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(spacing[:3], np.float64)
    lps[:3, 3] = np.asarray(origin[:3], np.float64)
    return LPS @ lps


def sitk_geometry(affine: np.ndarray) -> tuple[list, list, list]:
    """(spacing, origin, direction) of a SimpleITK image on the grid of a RAS ``affine``."""
    lps = LPS @ np.asarray(affine, np.float64)
    m = lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    return spacing.tolist(), lps[:3, 3].tolist(), (m / spacing).ravel().tolist()


def _sitk():
    from .optional import require

    return require("SimpleITK", "reading and writing NRRD and MHA/MHD scans")


def _read_sitk(path: Path, kind: str) -> "Volume":
    sitk = _sitk()
    try:
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    except Exception as e:  # SimpleITK raises RuntimeError for every kind of bad file
        raise UserError(f"cannot read {path}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
    dim, comps = img.GetDimension(), img.GetNumberOfComponentsPerPixel()
    # SimpleITK's arrays are (z, y, x[, components]) or (t, z, y, x): to (x, y, z[, c or t]).
    if dim == 4:
        data = arr.transpose(3, 2, 1, 0)
    elif dim == 3:
        data = arr.transpose(2, 1, 0, 3) if comps > 1 else arr.transpose(2, 1, 0)
    elif dim == 2:
        data = (arr.transpose(1, 0, 2) if comps > 1 else arr.T)[:, :, None]
    else:
        raise UserError(f"{path} is a {dim}D image; expected a 3D volume")
    spacing, origin, direction = img.GetSpacing(), img.GetOrigin(), img.GetDirection()
    if dim == 2:
        spacing, origin = tuple(spacing) + (1.0,), tuple(origin) + (0.0,)
        direction = (direction[0], direction[1], 0.0, direction[2], direction[3], 0.0, 0.0, 0.0, 1.0)
    return Volume(path, kind, data, affine=sitk_affine(spacing, origin, direction),
                  extra={"components": comps, "dimension": dim})


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI, NRRD or MHA/MHD scan or an ``.npy`` array; a clear error for a
    missing, corrupt or non-numeric file."""
    path = Path(path)
    kind = kind_of(path)
    if kind is None:
        raise UserError(f"{path}: not a scan (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) or .npy file")
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if kind in ("nrrd", "mha"):
        return _read_sitk(path, kind)
    if kind == "npy":
        data = load_npy(path)
        if not isinstance(data, np.ndarray) or not (np.issubdtype(data.dtype, np.number)
                                                    or data.dtype == bool):
            raise UserError(f"{path} does not hold a numeric array")
        return Volume(path, kind, data)
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # bad header, truncated gzip, wrong size: all "unreadable"
        raise UserError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    return Volume(path, kind, data, affine=img.affine, header=img.header, image_class=type(img))


def as_3d(vol: Volume, frame: int | None = None) -> np.ndarray:
    """The volume's 3D array; a 4D file needs ``frame`` (a singleton 4th axis is dropped)."""
    data = vol.data
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4 and frame is not None:
        if not -data.shape[3] <= frame < data.shape[3]:
            raise UserError(f"{vol.path}: frame {frame} does not exist (the file has {data.shape[3]} frames)")
        return data[..., frame]
    if data.ndim != 3:
        hint = (f"; pick a frame with --frame T (0..{data.shape[3] - 1}) or predict all with --frame all"
                if data.ndim == 4 else "")
        raise UserError(f"{vol.path} is {data.ndim}D with shape {tuple(data.shape)}; expected a 3D volume{hint}")
    return data


# ------------------------------------------------------------------ writing
def _atomic_path(path: Path) -> Path:
    # Keep the extension: nibabel and SimpleITK choose the format from the name.
    name = path.name
    ext = next((e for e in SCAN_EXTS + (".npy",) if name.lower().endswith(e)), "")
    return path.with_name(f".{name[: len(name) - len(ext)]}.{os.getpid()}.tmp{ext}")


def _replace_into(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_npy(path: str | Path, arr: np.ndarray) -> None:
    path = Path(path)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, arr)
    _replace_into(path, write)


def write_label_nifti(path: str | Path, labels: np.ndarray, like: Volume, num_classes: int | None = None) -> None:
    """Write ``labels`` (x, y, z[, t]) as uint8 NIfTI on ``like``'s grid: its affine and
    header, with the data type, scaling and display range of a label map."""
    import nibabel as nib

    path = Path(path)
    if like.affine is None:
        raise ValueError("a NIfTI label map needs the affine of a NIfTI input")
    labels = np.asarray(labels)
    if labels.shape[:3] != like.data.shape[:3]:
        raise ValueError(f"label map {labels.shape} is not on the grid of {like.path} {like.data.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("label values must fit uint8")
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    cls = like.image_class or nib.Nifti1Image
    img = cls(labels.astype(np.uint8), like.affine, header)
    # The scan's intensity scaling and window would misplace the labels or hide them in a viewer.
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0
    img.header["cal_max"] = (num_classes - 1) if num_classes else int(labels.max(initial=0))
    try:
        img.header.set_intent("label")
    except Exception:  # header types without NIfTI intents
        pass
    _replace_into(path, lambda tmp: nib.save(img, str(tmp)))


def write_label_map(path: str | Path, labels: np.ndarray, like: Volume, num_classes: int | None = None) -> None:
    """Write ``labels`` (x, y, z) on ``like``'s grid in the format ``path``'s extension names:
    NIfTI (with ``like``'s header when it is a NIfTI scan), NRRD or MHA (compressed)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "nifti":
        if like.header is None:  # an NRRD/MHA scan written as NIfTI: a fresh header on its affine
            import nibabel as nib

            like = Volume(like.path, "nifti", like.data, like.affine,
                          nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), like.affine).header, nib.Nifti1Image)
        return write_label_nifti(path, labels, like, num_classes)
    if kind not in ("nrrd", "mha"):
        raise ValueError(f"{path}: a label map is written as .nii.gz, .nrrd or .mha")
    labels = np.asarray(labels)
    if labels.shape[:3] != like.data.shape[:3]:
        raise ValueError(f"label map {labels.shape} is not on the grid of {like.path} {like.data.shape}")
    sitk = _sitk()
    img = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(np.uint8).transpose(2, 1, 0)))
    spacing, origin, direction = sitk_geometry(like.affine)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    _replace_into(path, lambda tmp: sitk.WriteImage(img, str(tmp), True))


def output_extension(scan: str | Path, output_format: str = "same") -> str:
    """The extension of a label map for ``scan``: its own format's (``"same"``) or the one named."""
    kind = kind_of(scan) if output_format == "same" else output_format
    return FORMAT_EXT.get(kind, ".nii.gz")
