"""Debian packages the tests need (Chromium, Redis): found on PATH, else installed with apt-get."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def installed(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` first when it is missing (needs root)."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(f"{command} is not installed and installing it needs root: apt-get install {package}")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        check=True,
        env=env,
        timeout=900,
        capture_output=True,
    )
    found = shutil.which(command)
    assert found, f"apt-get installed {package} but {command} is not on PATH"
    return found
