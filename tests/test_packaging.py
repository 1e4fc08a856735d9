"""The wheel ``pip install .`` builds: declared dependencies, extras and package data.

The wheel is built offline (``--no-deps --no-build-isolation --no-index``) from a copy of the
packaging inputs, so the checkout gets no ``build/`` folder.
"""

import email.parser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("plugins", "projects")
# What the plugin imports at run time, by distribution name (fastreid is installed --no-deps;
# scikit-learn and tensorboard are what its modules imported by the plugin need).
RUNTIME = {
    "torch",
    "torchvision",
    "open-clip-torch",
    "faiss-cpu",
    "numpy",
    "pillow",
    "regex",
    "yacs",
    "tabulate",
    "termcolor",
    "scikit-learn",
    "tensorboard",
}
ONNX_EXTRA = {"onnx", "onnxscript", "onnxruntime"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The built wheel's path."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(ROOT / name, src / name)
    # The in-place build of the ranking kernel stays behind: the wheel must compile its own.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.so", "_rank_kernel.c")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--quiet", "-w", str(tmp / "dist"), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = (tmp / "dist").glob("fastreid_crossmodal-0.1.0-*.whl")
    return path


def metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def requirements(wheel):
    """Requires-Dist entries as ``{name: Requirement}`` (unconditional) and the onnx extra's."""
    base, onnx = {}, {}
    for line in metadata(wheel).get_all("Requires-Dist"):
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if req.marker is None:
            base[name] = req
        else:
            assert req.marker.evaluate({"extra": "onnx"}), line
            assert not req.marker.evaluate({"extra": ""}), line
            onnx[name] = req
    return base, onnx


def pinned(*files):
    """``name -> version`` of the ``name==version`` lines of requirement files."""
    pins = {}
    for file in files:
        for line in (ROOT / file).read_text().splitlines():
            found = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s#;]+)", line)
            if found:
                pins[canonicalize_name(found.group(1))] = found.group(2)
    return pins


def test_wheel_declares_runtime_dependencies_and_onnx_extra(wheel):
    meta = metadata(wheel)
    assert meta["Name"] == "fastreid-crossmodal"
    assert meta.get_all("Provides-Extra") == ["onnx"]
    base, onnx = requirements(wheel)
    assert set(base) == RUNTIME
    assert set(onnx) == ONNX_EXTRA
    # fastreid pins torch==1.13.1 in its metadata: it is installed separately, --no-deps.
    assert "fastreid" not in base
    for req in (*base.values(), *onnx.values()):
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), str(req)


def test_tested_pins_satisfy_declared_ranges(wheel):
    """``make install``'s pinned set is one the declared ranges allow."""
    pins = pinned("requirements.txt", "requirements-torch.txt")
    base, onnx = requirements(wheel)
    for name, req in {**base, **onnx}.items():
        assert name in pins, f"{name} is declared in setup.py but not pinned in requirements"
        assert req.specifier.contains(pins[name], prereleases=True), (str(req), pins[name])


def test_wheel_holds_package_data_and_every_module(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    configs = sorted(p.name for p in (ROOT / "plugins/modeling/model_configs").glob("*.json"))
    assert "tiny-vit.json" in configs
    for name in configs:
        assert f"plugins/modeling/model_configs/{name}" in names
    # a folder without __init__.py would be left out of a non-editable install
    modules = {
        str(p.relative_to(ROOT))
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert "plugins/search/onnx_encoders.py" in modules
    assert sorted(modules - names) == []
    assert not any(n.startswith(("tests/", "tools/", "configs/")) for n in names)
    # The ranking metrics' counting pass is compiled into the wheel (a platform wheel).
    assert any(re.fullmatch(r"plugins/evaluation/_rank_kernel\..*\.so", n) for n in names)
    assert not os.path.basename(wheel).endswith("-none-any.whl")
