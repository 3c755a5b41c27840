"""Dependencies that earn their place: optional packages are asked for by name, and
pyproject.toml declares exactly what the code imports.

A module set to ``None`` in ``sys.modules`` raises ImportError on import, which is what a
user without the package sees.
"""
import ast
import functools
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from genericssl.cli import main as cli
from genericssl.errors import UserError
from genericssl.optional import EXTRAS, require
from genericssl.prepare import mnms_sort
from prepare_fixtures import make_la, write_info_csv

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "genericssl"
TESTS = ROOT / "tests"
OPTIONAL = ("h5py", "xlrd", "SimpleITK", "medpy", "onnx", "onnxscript", "onnxruntime")

# import name -> distribution, where they differ and the package may not be installed here
DIST_OF = {"yaml": "pyyaml", "sklearn": "scikit-learn", "skimage": "scikit-image", "PIL": "pillow",
           "cv2": "opencv-python"}
# A dependency the code uses through another package's module rather than by its own name.
USED_THROUGH = {"torch.utils.tensorboard": "tensorboard"}
# Calls whose first argument, a string, is a module imported then.
IMPORTERS = ("require", "import_module", "importorskip")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req).group(0))


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imports(folder: Path, local=()) -> dict[str, set[str]]:
    """Every module imported under ``folder`` (module level or inside functions, and the names
    given to IMPORTERS): full dotted name -> files; the standard library and ours left out."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and getattr(node.func, "id", getattr(node.func, "attr", None)) in IMPORTERS):
                names = [node.args[0].value]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "genericssl" or top in local or not top:
                    continue
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.lru_cache(maxsize=None)
def _installed() -> dict:
    return importlib.metadata.packages_distributions()


def _distribution(module: str) -> str:
    top = module.split(".")[0]
    if top in DIST_OF:
        return _norm(DIST_OF[top])
    installed = _installed().get(top)
    return _norm(installed[0] if installed else top)


def _used_distributions(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for module, files in imports.items():
        used.setdefault(_distribution(module), set()).update(files)
        for prefix, dist in USED_THROUGH.items():
            if module == prefix or module.startswith(prefix + "."):
                used.setdefault(_norm(dist), set()).update(files)
    return used


# ---------------------------------------------------------------- the message
@pytest.mark.parametrize("module, extra", [("h5py", "la"), ("xlrd", "mnms"), ("SimpleITK", "formats")])
def test_require_names_the_package_and_the_extra(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError) as e:
        require(module, "reading something")
    msg = str(e.value)
    assert msg.startswith("reading something needs the Python package " + module)
    assert f"pip install 'genericssl[{extra}]'" in msg and f"pip install {module})" in msg
    assert "\n" not in msg


def test_require_returns_the_module():
    import numpy

    assert require("numpy", "anything") is numpy


def test_prepare_la_without_h5py_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    make_la(tmp_path / "raw", n_train=2, n_test=1, shape=(4, 4, 4))  # the fixture itself needs h5py
    monkeypatch.setitem(sys.modules, "h5py", None)
    out = tmp_path / "LA_data"
    assert cli(["prepare", "la", "--raw", str(tmp_path / "raw"), "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # once, not once per case
    assert err.startswith("genericssl prepare: error: reading the LA release's HDF5 volumes needs the "
                          "Python package h5py"), err
    assert "pip install 'genericssl[la]'" in err
    assert not out.exists()  # failed before writing anything


def test_mnms_spreadsheet_without_xlrd_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "OpenDataset"
    raw.mkdir()
    info = raw / "mnms_dataset_info.xls"
    try:
        from prepare_fixtures import write_info_xls

        write_info_xls(info, [("A1A1A1", "A")])
    except ImportError:  # without xlwt: the content is never read anyway
        info.write_bytes(b"\xd0\xcf\x11\xe0 not read")
    monkeypatch.setitem(sys.modules, "xlrd", None)
    assert cli(["prepare", "mnms-sort", "--raw", str(raw), "--out", str(tmp_path / "MNMs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("genericssl prepare: error: reading the M&Ms spreadsheet mnms_dataset_info.xls "
                          "needs the Python package xlrd"), err
    assert "pip install 'genericssl[mnms]'" in err
    assert "cannot read the spreadsheet" not in err


def test_mnms_csv_needs_no_xlrd(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "xlrd", None)
    info = write_info_csv(tmp_path / "mnms_dataset_info.csv", [("A1A1A1", "A"), ("B1B1B1", "B")])
    assert mnms_sort.read_info(info) == {"A1A1A1": "A", "B1B1B1": "B"}


def test_every_module_imports_without_the_optional_packages():
    """A user without the extras can import all of genericssl and run the CLI's help."""
    code = ("import sys, importlib, pkgutil\n"
            f"for m in {OPTIONAL!r}: sys.modules[m] = None\n"
            "import genericssl\n"
            "for info in pkgutil.walk_packages(genericssl.__path__, 'genericssl.'):\n"
            "    if not info.name.endswith('__main__'):\n"
            "        importlib.import_module(info.name)\n"
            "from genericssl.cli import main\n"
            "try:\n"
            "    main(['--help'])\n"
            "except SystemExit as e:\n"
            "    assert e.code == 0, e.code\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


# ---------------------------------------------------------------- pyproject.toml
def test_every_import_is_declared_and_every_dependency_imported():
    project = _pyproject()
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs}
              for name, reqs in project["optional-dependencies"].items()}
    declared = runtime.union(*extras.values())
    used = _used_distributions(_imports(SRC))
    undeclared = {d: sorted(f) for d, f in used.items() if d not in declared}
    assert not undeclared, f"imported by src/genericssl but not in pyproject.toml: {undeclared}"
    unused = sorted(runtime - set(used))
    assert not unused, f"runtime dependencies nothing in src/genericssl imports: {unused}"
    # A runtime dependency that only the tests use belongs in the test extra (medpy did).
    assert "medpy" not in runtime and "medpy" in extras["test"]


def test_the_tests_imports_are_in_the_test_extra():
    project = _pyproject()
    have = {_requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    local = {p.stem for p in TESTS.glob("*.py")}
    used = _used_distributions(_imports(TESTS, local=local))
    missing = {d: sorted(f) for d, f in used.items() if d not in have}
    assert not missing, f"imported by the tests but in neither dependencies nor the test extra: {missing}"


def test_extras_match_the_optional_helper():
    extras = {name: {_requirement_name(r) for r in reqs}
              for name, reqs in _pyproject()["optional-dependencies"].items()}
    for module, (package, extra) in EXTRAS.items():
        assert _norm(package) in extras[extra], f"{module}: genericssl.optional names [{extra}], which lacks it"
    optional = set(extras) - {"all", "test"}
    assert {"la", "mnms", "formats", "export"} <= optional
    assert extras["all"] == set().union(*(extras[e] for e in optional)), f"[all] is not {sorted(optional)}"
    assert extras["all"] <= extras["test"], "the tests exercise every optional package"
