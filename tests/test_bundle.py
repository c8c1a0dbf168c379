"""The Databricks asset bundle, its task entry point and the cluster config (no network/Spark)."""

from __future__ import annotations

import ast
import itertools
import json
import re
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from manymodels import cli
from manymodels.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "databricks.yml"
RUN_STEP = ROOT / "jobs" / "run_step.py"
CLUSTER_CONF = ROOT / "conf" / "databricks.yml"
# CI clones the repository next to shared/; never read /work/shared by its absolute path.
SCHEMA = ROOT.parent / "shared" / "schemas" / "databricks-bundle.schema.json"

CHAIN = ["ingest", "clean", "train", "promote", "score"]
REF = re.compile(r"\$\{([^}]+)\}")


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return yaml.safe_load(BUNDLE.read_text())


@pytest.fixture(scope="module")
def tasks(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return bundle["resources"]["jobs"]["manymodels_pipeline"]["tasks"]


@pytest.fixture(autouse=True)
def _no_home_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MANYMODELS_HOME", raising=False)


def _params(task: dict[str, Any]) -> list[str]:
    return list(task["spark_python_task"]["parameters"])


def _resolve(text: str, bundle: dict[str, Any]) -> str:
    """Substitute ${...} references as the CLI would, with local stand-ins for the workspace."""
    variables = bundle.get("variables", {})

    def one(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref == "workspace.file_path":
            return str(ROOT)  # the bundle syncs conf/ and jobs/ to the workspace file path
        if ref.startswith("var."):
            return _resolve(str(variables[ref[4:]]["default"]), bundle)
        return "dummy"

    return REF.sub(one, text)


# --------------------------------------------------------------------------- JSON schema


def _schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="dev dependency jsonschema>=4 missing")
    from jsonschema import ValidationError, validators

    if not SCHEMA.is_file():
        pytest.skip(f"bundle schema not found at {SCHEMA} (shared/ is a sibling of the repo)")
    schema = json.loads(SCHEMA.read_text())
    base = validators.validator_for(schema, default=jsonschema.Draft202012Validator)

    def translate(pattern: str) -> str:
        # The schema's ${...} patterns use Go/ICU classes that Python's re lacks.
        return (
            pattern.replace(r"[\p{L}\p{N}]", r"[^\W_]")
            .replace(r"\p{L}", r"[^\W\d_]")
            .replace(r"\p{N}", r"\d")
        )

    def pattern(_v: Any, patrn: str, instance: Any, _s: Any) -> Iterator[Any]:
        if isinstance(instance, str) and not re.search(translate(patrn), instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    # No check_schema(): the metaschema's "format: regex" would reject those same patterns.
    return validators.extend(base, {"pattern": pattern})(schema)


def _errors(validator: Any, doc: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in validator.iter_errors(doc)
    ]


def test_bundle_is_valid_against_the_official_schema(bundle: dict[str, Any]) -> None:
    validator = _schema_validator()
    assert _errors(validator, bundle) == []


def test_schema_validation_is_not_vacuous(bundle: dict[str, Any]) -> None:
    validator = _schema_validator()
    job = bundle["resources"]["jobs"]["manymodels_pipeline"]
    bad_key = json.loads(json.dumps(bundle))  # a typo in a task's keys
    bad_key["resources"]["jobs"]["manymodels_pipeline"]["tasks"][0]["depend_on"] = []
    bad_enum = json.loads(json.dumps(bundle))
    bad_enum["resources"]["jobs"]["manymodels_pipeline"]["schedule"]["pause_status"] = "OFF"
    bad_ref = json.loads(json.dumps(bundle))
    bad_ref["resources"]["jobs"]["manymodels_pipeline"]["max_concurrent_runs"] = "${nope.x}"
    assert _errors(validator, bad_key)
    assert _errors(validator, bad_enum)
    assert _errors(validator, bad_ref)
    assert isinstance(job["max_concurrent_runs"], int)


def _endpoint(bundle: dict[str, Any]) -> dict[str, Any]:
    (endpoint,) = bundle["resources"]["model_serving_endpoints"].values()
    return endpoint


@pytest.mark.parametrize(
    "breakage",
    [
        "misspelt served-entity field",
        "misspelt endpoint field",
        "no endpoint name",
        "not a boolean",
    ],
)
def test_a_broken_serving_endpoint_fails_the_schema(bundle: dict[str, Any], breakage: str) -> None:
    validator = _schema_validator()
    broken = json.loads(json.dumps(bundle))
    endpoint = _endpoint(broken)
    (entity,) = endpoint["config"]["served_entities"]
    if breakage == "misspelt served-entity field":
        entity["entity_versoin"] = entity.pop("entity_version")
    elif breakage == "misspelt endpoint field":
        endpoint["served_entities"] = endpoint.pop("config")["served_entities"]
    elif breakage == "no endpoint name":
        del endpoint["name"]
    else:
        entity["scale_to_zero_enabled"] = "yes"
    assert _errors(validator, broken), breakage
    assert _errors(validator, bundle) == []  # so the one change to the endpoint is the cause


# --------------------------------------------------------------------------- serving endpoint


def test_the_serving_endpoint_serves_the_champion_version(bundle: dict[str, Any]) -> None:
    from manymodels.registry import CACHE_SIZE_ENV
    from manymodels.registry.store import parse_cache_size

    endpoint = _endpoint(bundle)
    assert "${bundle.target}" in endpoint["name"]  # dev and prod deploy their own endpoint
    assert re.fullmatch(r"[A-Za-z0-9_-]+", endpoint["name"].replace("${bundle.target}", "prod"))
    (entity,) = endpoint["config"]["served_entities"]
    assert entity["entity_name"] == "${var.model_name}"
    # Model Serving takes a version number, not an alias: the champion's, set at deploy time
    assert entity["entity_version"] == "${var.champion_version}"
    champion_version = bundle["variables"]["champion_version"]
    assert "default" not in champion_version  # never a silent stand-in for the champion
    assert "champion" in champion_version["description"]
    assert "get-by-alias" in champion_version["description"]
    assert entity["scale_to_zero_enabled"] is True and entity["workload_size"] == "Small"
    env = entity["environment_vars"]
    assert set(env) == {CACHE_SIZE_ENV}
    assert parse_cache_size(_resolve(env[CACHE_SIZE_ENV], bundle)) >= 1
    # Only the endpoint is new: the job and everything else stay as they were.
    assert set(bundle["resources"]) == {"jobs", "model_serving_endpoints"}


def test_every_referenced_variable_is_declared(bundle: dict[str, Any]) -> None:
    used = {ref[4:] for ref in REF.findall(BUNDLE.read_text()) if ref.startswith("var.")}
    assert used and used <= set(bundle["variables"]), used - set(bundle["variables"])


# --------------------------------------------------------------------------- job structure


def test_bundle_basics(bundle: dict[str, Any]) -> None:
    assert bundle["bundle"]["name"] == "manymodels"
    assert {"catalog", "model_name", "node_type_id", "spark_version"} <= set(bundle["variables"])
    assert "-ml-" in bundle["variables"]["spark_version"]["default"]
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and artifact["path"] == "."
    assert "--wheel" in artifact["build"]
    targets = bundle["targets"]
    assert targets["dev"]["mode"] == "development" and targets["dev"]["default"] is True
    assert targets["prod"]["mode"] == "production"
    assert targets["prod"]["workspace"]["root_path"]
    job = bundle["resources"]["jobs"]["manymodels_pipeline"]
    assert job["schedule"]["pause_status"] == "PAUSED"
    prod_job = targets["prod"]["resources"]["jobs"]["manymodels_pipeline"]
    assert prod_job["schedule"]["pause_status"] == "UNPAUSED"


def test_tasks_chain_ingest_clean_train_promote_score(tasks: list[dict[str, Any]]) -> None:
    assert [t["task_key"] for t in tasks] == CHAIN
    assert "depends_on" not in tasks[0]
    for prev, task in itertools.pairwise(tasks):
        assert task["depends_on"] == [{"task_key": prev["task_key"]}]


def test_tasks_run_the_entry_point_with_the_wheel(
    bundle: dict[str, Any], tasks: list[dict[str, Any]]
) -> None:
    job = bundle["resources"]["jobs"]["manymodels_pipeline"]
    clusters = {c["job_cluster_key"] for c in job["job_clusters"]}
    synced = bundle["sync"]["paths"]
    for task in tasks:
        assert task["job_cluster_key"] in clusters
        python_file = task["spark_python_task"]["python_file"]
        assert (ROOT / python_file).resolve() == RUN_STEP
        assert Path(python_file).parts[0] in synced
        assert task["libraries"] == [{"whl": "./dist/*.whl"}]
        for param in _params(task):
            if "${workspace.file_path}/" in param:
                rel = param.split("${workspace.file_path}/", 1)[1]
                assert (ROOT / rel).is_file(), rel
                assert Path(rel).parts[0] in synced, rel


@pytest.mark.parametrize("verb", CHAIN)
def test_task_parameters_are_a_cli_command_line(
    verb: str, bundle: dict[str, Any], tasks: list[dict[str, Any]]
) -> None:
    (task,) = [t for t in tasks if t["task_key"] == verb]
    params = _params(task)
    assert params[0] == verb and verb in cli.VERBS
    assert all(isinstance(p, str) for p in params)

    dummy = [REF.sub("dummy", p) for p in params]
    try:
        args = cli.build_parser().parse_args(dummy)
    except SystemExit as exc:  # argparse reports to stderr and exits
        pytest.fail(f"manymodels rejects task {verb}'s parameters {dummy}: exit {exc.code}")
    assert args.verb == verb

    # With the bundle's defaults resolved, the task's config loads as it would on the cluster.
    args = cli.build_parser().parse_args([_resolve(p, bundle) for p in params])
    cfg = load_config(conf=args.conf, overrides=args.overrides, home=args.home)
    variables = bundle["variables"]
    assert cfg.tables.backend == "spark"
    assert cfg.tables.catalog == variables["catalog"]["default"]
    assert cfg.mlflow.model_name == variables["model_name"]["default"]
    assert cfg.mlflow.tracking_uri == "databricks"
    assert cfg.mlflow.experiment.startswith("/")


# --------------------------------------------------------------------------- cluster config


def test_cluster_config_loads() -> None:
    cfg = load_config(conf=str(CLUSTER_CONF), base=ROOT / "conf" / "base.yml")
    assert cfg.tables.backend == "spark"
    assert cfg.tables.format == "delta"
    assert cfg.tables.catalog == "main"
    assert cfg.mlflow.tracking_uri == "databricks"
    assert cfg.mlflow.registry_uri == "databricks-uc"
    assert cfg.mlflow.model_name == "main.forecasting.manymodels_forecast"
    assert cfg.mlflow.experiment.startswith("/")
    assert Path(cfg.home).is_absolute()


# --------------------------------------------------------------------------- jobs/run_step.py


def test_run_step_forwards_argv_to_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str] | None = None) -> int:
        seen.append(list(argv or []))
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    argv = ["train", "--conf", "conf/databricks.yml", "--set", "tables.catalog=dev"]
    monkeypatch.setattr(sys, "argv", [str(RUN_STEP), *argv])
    runpy.run_path(str(RUN_STEP), run_name="__main__")  # exit code 0: no SystemExit
    assert seen == [argv]

    module = runpy.run_path(str(RUN_STEP), run_name="run_step")
    assert module["run"](["score", "--horizon", "7"]) == 0
    assert seen[-1] == ["score", "--horizon", "7"]


def test_run_step_exits_with_the_cli_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "main", lambda argv=None: 2)
    monkeypatch.setattr(sys, "argv", [str(RUN_STEP), "clean"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(RUN_STEP), run_name="__main__")
    assert exc.value.code == 2


def test_run_step_is_thin() -> None:
    tree = ast.parse(RUN_STEP.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "sys", "collections", "manymodels"}, imported
    source = RUN_STEP.read_text()
    for forbidden in ("argparse", "SparkSession", "getOrCreate", "get_spark"):
        assert forbidden not in source
