"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def needs_root() -> None:
    """Skip the test unless it runs as root (network namespaces, qdiscs, cgroups)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, qdiscs, cgroups)")
