"""The real `mlflow models serve`, started by `manymodels serve`, answering HTTP on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import manymodels as mm
from manymodels import registry
from manymodels.config import Config, load_config
from manymodels.datasets import generate_demand
from manymodels.registry.serve import FAST_HTTP, wait_ready

pytest.importorskip("mlflow")

N_KEYS = 120
MAX_ROWS = 500


@dataclass
class Served:
    cfg: Config
    port: int
    models: pd.DataFrame  # the registered rows: keys, run_id, family, model, ...

    def post(self, body: bytes | str, content_type: str = "application/json") -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            data = body.encode() if isinstance(body, str) else body
            conn.request("POST", "/invocations", data, {"Content-Type": content_type})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def records(self, rows: list[dict[str, Any]]) -> tuple[int, Any]:
        return self.post(json.dumps({"dataframe_records": rows}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(
    home: Path, args: list[str], env: dict[str, str], log: Path, timeout: float = 120
) -> Iterator[int]:
    """`manymodels serve` in a subprocess on a free loopback port; stopped on exit."""
    port = _free_port()
    cmd = [sys.executable, "-m", "manymodels.cli", "--home", str(home), "serve"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        wait_ready(proc, "127.0.0.1", port, timeout, log)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANYMODELS_", "MLFLOW_"))}
    env["MANYMODELS_SERVE_MAX_ROWS"] = str(MAX_ROWS)
    env["MLFLOW_ENV_ROOT"] = str(home / "envs")  # where --env-manager uv builds its env
    return env


def _champion(home: Path) -> tuple[Config, pd.DataFrame]:
    """A champion set of N_KEYS ridge models with price and promo regressors."""
    cfg = load_config(
        home=home,
        overrides={
            "train.families": ["ridge"],
            "train.n_windows": 1,
            "train.horizon": 7,
            "train.fallback": None,
            "data.regressors": ["price", "promo"],
        },
    )
    history = generate_demand(n_stores=2, n_items=6, n_periods=400, seed=3)
    ledger = mm.fit(history, cfg)
    ok = ledger[ledger["status"] == "ok"].reset_index(drop=True)
    assert len(ok) == 12
    # the fitted models again under more keys: the server loads each key's bytes on its own
    rows = ok.iloc[[i % len(ok) for i in range(N_KEYS)]].reset_index(drop=True)
    rows["store"] = [str(i // 10 + 1) for i in range(N_KEYS)]
    rows["item"] = [str(i % 10 + 1) for i in range(N_KEYS)]
    with registry.job_run(cfg, "train") as run:
        registry.register_model_set(cfg, rows, alias="champion", run_id=run.run_id)
    return cfg, rows


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serving") / "home"
    cfg, rows = _champion(home)
    with serving(home, [], _server_env(home), home.parent / "server.log") as port:
        yield Served(cfg, port, rows)


def _keys(n: int, horizon: int = 7) -> list[dict[str, Any]]:
    return [
        {"store": str(i // 10 + 1), "item": str(i % 10 + 1), "horizon": horizon} for i in range(n)
    ]


def _no_trace(payload: Any) -> None:
    text = json.dumps(payload) if not isinstance(payload, str) else payload
    assert "Traceback" not in text and "stack_trace" not in text and "site-packages" not in text


def test_one_key_by_horizon(served: Served) -> None:
    status, body = served.records(_keys(1))
    assert status == 200, body
    out = pd.DataFrame(body["predictions"])
    assert list(out.columns) == ["store", "item", "ds", "yhat", "yhat_lower", "yhat_upper", "error"]
    assert len(out) == 7 and out["error"].isna().all()
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()
    last = pd.Timestamp(served.models["last_ds"].iloc[0])
    expected = pd.date_range(last + pd.Timedelta(days=1), periods=7, freq="D")
    assert pd.to_datetime(out["ds"]).tolist() == list(expected)


def test_one_hundred_keys_match_the_in_process_model_set(served: Served) -> None:
    status, body = served.records(_keys(100))
    assert status == 200, body
    out = pd.DataFrame(body["predictions"])
    assert len(out) == 700 and out["error"].isna().all()
    assert out.groupby(["store", "item"]).size().eq(7).all()
    local = registry.load_model_set(served.cfg).predict(pd.DataFrame(_keys(100)))
    pd.testing.assert_series_equal(
        out["yhat"].reset_index(drop=True), local["yhat"].reset_index(drop=True), rtol=1e-12
    )


def test_future_regressors_change_the_forecast(served: Served) -> None:
    last = pd.Timestamp(served.models["last_ds"].iloc[0])
    day = (last + pd.Timedelta(days=3)).strftime("%Y-%m-%d")
    rows = [
        {"store": "1", "item": "2", "ds": day, "price": 10.0, "promo": promo} for promo in (0, 1)
    ]
    plain, promoted = (served.records([r])[1]["predictions"][0]["yhat"] for r in rows)
    assert promoted != plain


def test_an_unknown_key_is_that_rows_error(served: Served) -> None:
    rows = [*_keys(2), {"store": "1", "item": "nope", "horizon": 3}]
    status, body = served.records(rows)
    assert status == 200, body
    out = pd.DataFrame(body["predictions"])
    bad = out[out["item"] == "nope"]
    assert len(bad) == 1 and bad["yhat"].isna().all()
    assert "(store='1', item='nope')" in bad["error"].iloc[0]
    assert out.loc[out["item"] != "nope", "error"].isna().all() and len(out) == 15
    _no_trace(body)


def test_a_row_without_a_date_is_that_rows_error(served: Served) -> None:
    status, body = served.records([{"store": "1", "item": "2"}, *_keys(1, 2)])
    assert status == 200, body
    errors = [r["error"] for r in body["predictions"]]
    assert errors.count(None) == 2 and any("neither a ds nor" in (e or "") for e in errors)


def test_malformed_json_is_a_400_that_says_why(served: Served) -> None:
    status, body = served.post('{"dataframe_records": [{"store": "1", "item": "2"]}')
    assert status == 400
    assert "JSON" in body["message"]
    _no_trace(body)


def test_missing_key_column_is_a_400(served: Served) -> None:
    status, body = served.records([{"store": "1", "horizon": 3}])
    assert status == 400 and "item" in body["message"]
    _no_trace(body)


def test_oversized_requests_are_refused(served: Served) -> None:
    status, body = served.records(_keys(MAX_ROWS + 1, 1))
    assert status == 400
    assert (
        f"at most {MAX_ROWS}" in body["message"] and "MANYMODELS_SERVE_MAX_ROWS" in body["message"]
    )
    status, body = served.records([{"store": "1", "item": "2", "horizon": 10**9}])
    assert status == 400 and "forecast rows" in body["message"]
    _no_trace(body)


def test_csv_requests_are_served(served: Served) -> None:
    status, body = served.post("store,item,horizon\n2,3,3\n", "text/csv")
    assert status == 200, body
    assert [r["error"] for r in body["predictions"]] == [None] * 3


def test_a_fresh_environment_is_built_from_the_sets_wheel(served: Served, tmp_path: Path) -> None:
    """--env-manager uv installs the logged requirements (the wheel, pinned packages) into a
    new env: the server runs without this checkout's manymodels on its path."""
    home = served.cfg.home_path
    env = _server_env(home)
    env["PYTHONPATH"] = ""
    with serving(home, ["--env-manager", "uv"], env, tmp_path / "uv.log", timeout=600) as port:
        fresh = Served(served.cfg, port, served.models)
        status, body = fresh.records(_keys(3))
        ok, reference = served.records(_keys(3))
    assert status == 200 and ok == 200, body
    assert body == reference
    installed = list((home / "envs").glob("*/lib/python*/site-packages/manymodels/__init__.py"))
    assert installed, "the env manager did not install manymodels from the set's wheel"
    site = installed[0].parents[1]
    for name in FAST_HTTP:  # the server there runs on the same HTTP stack as here
        assert (site / name / "__init__.py").is_file(), f"{name} is not in the fresh env"


def test_the_readme_request_is_served_as_the_readme_says(served: Served) -> None:
    section = (Path(__file__).parents[1] / "README.md").read_text().split("## Serving", 1)[1]
    request = re.search(r"```json\n(.*?)```", section, flags=re.S)
    assert request is not None
    status, body = served.post(request.group(1))
    assert status == 200, body
    out = pd.DataFrame(body["predictions"])
    assert len(out) == 7 and out["error"].isna().sum() == 6
    assert "has no model for key (store='9', item='999')" in out["error"].dropna().iloc[0]


def test_serve_without_a_champion_says_what_to_run(tmp_path: Path, capsys: Any) -> None:
    from manymodels.cli import main

    assert main(["--home", str(tmp_path / "empty"), "serve"]) == 2
    assert "run `manymodels promote` first" in capsys.readouterr().err
    assert main(["--home", str(tmp_path / "empty"), "serve", "--version", "4"]) == 2
    assert "has no version 4" in capsys.readouterr().err


def test_requests_are_logged_only_with_access_log(served: Served, tmp_path: Path) -> None:
    """uvicorn's line per request is off by default (it cost ~0.6 ms of each answer) and on
    with --access-log; the startup lines are written either way."""
    quiet = served.cfg.home_path.parent / "server.log"
    assert served.records(_keys(1))[0] == 200
    assert "Uvicorn running on" in quiet.read_text()
    assert "POST /invocations" not in quiet.read_text()

    home = served.cfg.home_path
    log = tmp_path / "access.log"
    with serving(home, ["--access-log"], _server_env(home), log) as port:
        status, _ = Served(served.cfg, port, served.models).records(_keys(1))
    assert status == 200
    assert '"POST /invocations HTTP/1.1" 200' in log.read_text()
