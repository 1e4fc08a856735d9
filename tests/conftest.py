"""Fixtures shared by the end-to-end tests."""

import pytest

from tests.fixtures_text import write_rgbtpedes


@pytest.fixture(scope="module")
def rgbt(tmp_path_factory):
    """A generated RGBT-PEDES dataset root in the official layout (one per test module)."""
    root = tmp_path_factory.mktemp("rgbt")
    write_rgbtpedes(str(root))
    return str(root)


@pytest.fixture(params=["compiled", "compiled-scan", "compiled-search", "torch"])
def counting_backend(request, monkeypatch):
    """Run a test with the compiled counting pass (choosing per row, always scanning, always
    binary-searching) and with the pure torch one."""
    from plugins.evaluation import metrics

    if request.param == "torch":
        monkeypatch.setattr(metrics, "_compiled_kernel", lambda: None)
    else:
        mode = {"compiled": 0, "compiled-scan": 1, "compiled-search": 2}[request.param]
        monkeypatch.setattr(metrics, "_KERNEL_MODE", mode)
        assert metrics._compiled_kernel() is not None, (
            "plugins.evaluation._rank_kernel is not built: run `pip install -e .` (make install)"
        )
    return request.param
