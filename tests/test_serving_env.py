"""What a served set runs on: the requirements every set logs (core pins plus the server's
fast HTTP stack, with its platform marker) and the warning when that stack is missing."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from manymodels.config import load_config
from manymodels.registry import serve, wheel


def _pins() -> dict[str, Requirement]:
    return {Requirement(line).name: Requirement(line) for line in wheel.pinned_requirements()}


def test_every_set_pins_its_dependencies_and_the_servers_http_stack() -> None:
    pins = _pins()
    for name in ("pandas", "numpy", "scikit-learn", "mlflow", "httptools", "uvloop"):
        assert name in pins, name
        version = importlib.metadata.version(name)
        assert str(pins[name].specifier) == f"=={version}", pins[name]
    assert str(pins["uvloop"].marker) == 'sys_platform != "win32"'  # no Windows build
    assert pins["httptools"].marker is None
    # no other extra's packages (pyspark, pytest, ...) travel with a set
    assert not {"pyspark", "deltalake", "pytest", "databricks-sdk"} & set(pins)


def test_a_source_tree_logs_the_same_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a checkout without an installed distribution, pyproject.toml is read."""
    installed = wheel.pinned_requirements()

    def absent(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(wheel.importlib.metadata, "requires", absent)
    assert wheel.pinned_requirements() == installed


def test_serve_warns_when_the_fast_http_stack_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(home=tmp_path / "home")
    monkeypatch.setattr(serve, "resolve_version", lambda *_: (3, None))
    caplog.set_level(logging.WARNING, logger="manymodels.serving")

    serve.serve_command(cfg)
    assert not caplog.records, "uvloop and httptools are installed here"

    monkeypatch.setattr(serve, "missing_fast_http", lambda: ["uvloop", "httptools"])
    cmd = serve.serve_command(cfg)
    assert cmd.version == 3
    (record,) = caplog.records
    assert "uvloop and httptools not installed" in record.getMessage()
    assert "asyncio and h11" in record.getMessage()
    assert "pip install 'manymodels[serve]'" in record.getMessage()

    caplog.clear()  # an env manager that builds the set's environment installs them itself
    serve.serve_command(cfg, env_manager="uv")
    assert not caplog.records


def test_the_access_log_is_off_unless_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(home=tmp_path / "home")
    monkeypatch.setattr(serve, "resolve_version", lambda *_: (1, None))
    monkeypatch.delenv(serve.ACCESS_LOG_ENV, raising=False)
    assert serve.serve_command(cfg).env[serve.ACCESS_LOG_ENV] == "false"
    assert serve.serve_command(cfg, access_log=True).env[serve.ACCESS_LOG_ENV] == "true"
    monkeypatch.setenv(serve.ACCESS_LOG_ENV, "true")  # uvicorn's own variable is honoured
    assert serve.serve_command(cfg).env[serve.ACCESS_LOG_ENV] == "true"
