"""Shared fixtures. Real-data tests fail (never skip) when the data directory is missing."""

import os
import pathlib

import pytest


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """The staged datasets folder, from FEDJAX_SYN_DATA_DIR."""
    value = os.environ.get("FEDJAX_SYN_DATA_DIR")
    if not value:
        pytest.fail("FEDJAX_SYN_DATA_DIR is not set; point it at the staged datasets folder")
    path = pathlib.Path(value)
    if not path.is_dir():
        pytest.fail(f"FEDJAX_SYN_DATA_DIR={value} is not a directory")
    return path
