"""Fixtures shared by the end-to-end tests."""

import pytest

from tests.fixtures_text import write_rgbtpedes


@pytest.fixture(scope="module")
def rgbt(tmp_path_factory):
    """A generated RGBT-PEDES dataset root in the official layout (one per test module)."""
    root = tmp_path_factory.mktemp("rgbt")
    write_rgbtpedes(str(root))
    return str(root)
