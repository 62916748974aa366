"""Packaging facts a user relies on: one version string, and the licence shipped with the distribution."""

from __future__ import annotations

import importlib.metadata as md

import pytest

import tango_prune


def _dist() -> md.Distribution:
    try:
        return md.distribution("tango-prune")
    except md.PackageNotFoundError:  # e.g. PYTHONPATH=src without an install
        pytest.skip("tango-prune is not installed (make venv installs it)")


def test_installed_version_is_the_package_version():
    # pyproject reads the version from tango_prune.__version__, so the two can never disagree after an install.
    assert md.version("tango-prune") == tango_prune.__version__
    assert _dist().metadata["Version"] == tango_prune.__version__


def test_licence_metadata_and_file():
    meta = _dist().metadata
    assert meta["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (meta.get_all("License-File") or [])
