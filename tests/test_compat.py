"""Each fastreid compatibility fix is needed: its scenario passes with it and fails without it."""

import os
import subprocess
import sys

import pytest

from plugins import compat
from tests.compat_scenarios import SCENARIOS
from tests.fixtures_reid import write_market1501

SCRIPT = os.path.join(os.path.dirname(__file__), "compat_scenarios.py")

# fix name -> text of the error the defect raises when the fix is disabled
DEFECTS = {
    "collections_mapping": "cannot import name 'Mapping'",
    "torch_six": "No module named 'torch._six'",
    "optimizer_contiguous": "trainable parameters unchanged",
    "dataloader_without_cuda": "",  # the exact CUDA error text differs across torch builds
    "amp_on_cpu": "CUDA is required for AMP",
    "cython_exit": "exiting",
    "random_affine": "unexpected keyword argument",
    "baseline_inplace_normalisation": "normalised its input in place",
    "metric_printer_repeat": "ZeroDivisionError",
}


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_market1501(str(root))
    return str(root)


def test_every_fix_has_a_scenario():
    assert {f.__name__[len("fix_") :] for f in compat.FIXES} == set(SCENARIOS) == set(DEFECTS)


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_scenario_passes_with_fix(name, market):
    SCENARIOS[name](market)


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_scenario_fails_without_fix(name, market):
    env = dict(os.environ, PLUGINS_COMPAT_DISABLE=f"fix_{name}", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, SCRIPT, name, market], env=env, capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{name}: the defect did not show without its fix:\n{output}"
    assert "scenario passed" not in output
    assert DEFECTS[name] in output, output[-3000:]


def test_unknown_fix_name_is_an_error():
    env = dict(os.environ, PLUGINS_COMPAT_DISABLE="fix_nothing")
    proc = subprocess.run(
        [sys.executable, "-c", "import plugins"], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "unknown fixes" in proc.stderr
