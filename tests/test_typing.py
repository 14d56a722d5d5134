"""The packages type-check strictly (issue 13, section 3): `make test` runs mypy, and so does
this test, so a change that breaks the annotations fails the suite however it is run. The check
stays strict: the configuration cannot be weakened without this test saying so."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mypy_config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    return config


@pytest.mark.slow
def test_api_and_store_have_no_type_errors_under_strict_mypy() -> None:
    # The configuration in pyproject.toml names the packages; the cache makes a rerun quick.
    run = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("Success: no issues found"), run.stdout


def test_the_check_is_strict_and_covers_both_packages() -> None:
    config = _mypy_config()
    assert config["strict"] is True
    assert set(config["packages"]) == {"api", "store"}
    # No module is exempt wholesale: an override switches off named error codes only.
    for override in config.get("overrides", []):
        assert "ignore_errors" not in override, override
