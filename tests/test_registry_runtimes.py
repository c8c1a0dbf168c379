"""The declared Databricks runtimes: pyproject's bounds admit each runtime's own versions (so
installing the wheel never upgrades them) and the bundle's default runtime is one CI covers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import yaml

packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "runtimes"
PINNED = ("pyspark", "mlflow", "pandas", "numpy", "pyarrow", "scikit-learn")


def runtime_pins() -> dict[str, dict[str, str]]:
    text = SCRIPT.read_text()
    block = text[text.index("declare -A PINS=(") :]
    block = block[: block.index("\n)")]
    out: dict[str, dict[str, str]] = {}
    for name, pins in re.findall(r'\[([\w.-]+)\]="([^"]*)"', block):
        out[name] = dict(p.split("==") for p in pins.split())
    return out


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["local"]]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def test_three_lts_runtimes_pin_every_library_the_wheel_must_not_move() -> None:
    pins = runtime_pins()
    assert set(pins) == {"16.4-lts-ml", "17.3-lts-ml", "18-lts-ml"}
    for runtime, versions in pins.items():
        assert set(versions) == set(PINNED), runtime


@pytest.mark.parametrize("runtime", sorted(runtime_pins()))
def test_pyproject_bounds_admit_the_runtimes_versions(runtime: str) -> None:
    reqs = requirements()
    for name, version in runtime_pins()[runtime].items():
        spec = reqs[name].specifier
        assert spec.contains(version, prereleases=True), (
            f"{name} {spec} would replace {runtime}'s {name} {version} on install"
        )


def test_the_bundles_default_runtime_is_covered() -> None:
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    default = bundle["variables"]["spark_version"]["default"]
    match = re.match(r"^(\d+)\.(\d+|x)\.x-cpu-ml-", default)
    assert match, default
    major, minor = match.groups()
    covered = {name.split("-")[0] for name in runtime_pins()}
    assert f"{major}.{minor}" in covered or major in covered, (default, covered)
