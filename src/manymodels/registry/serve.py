"""``manymodels serve``: the real ``mlflow models serve`` on a registered version of the set.

The command resolves the alias (``champion`` by default) to its version once, so the log and
the server agree on what is served, and runs MLflow's own scoring server on ``models:/<name>/
<version>`` with the home's tracking and registry URIs. A server never follows an alias by
itself: restart it (or redeploy an endpoint) after a promotion.

MLflow's server is uvicorn, which runs on uvloop and httptools whenever they are importable
(``manymodels[serve]``) and otherwise on asyncio and h11: about 2 ms more per request, a
quarter of a warm one-key answer. With the local env manager the command warns when they are
missing; the other env managers install them from the set's requirements (``wheel``).

uvicorn's access log (a line per request) is off unless asked for (``access_log``), as in
gunicorn: writing it took about 0.6 ms of a warm answer's 4-6 ms. Errors are logged either way.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manymodels.config import Config
from manymodels.errors import ConfigError, SetupError
from manymodels.registry.client import uris
from manymodels.registry.load import resolve_version
from manymodels.registry.store import CACHE_SIZE_ENV

__all__ = [
    "ACCESS_LOG_ENV",
    "ENV_MANAGERS",
    "FAST_HTTP",
    "ServeCommand",
    "http_stack",
    "missing_fast_http",
    "serve_command",
    "wait_ready",
]

log = logging.getLogger("manymodels.serving")

#: MLflow's env managers: ``local`` serves from this environment; the others build the
#: model's own environment from its requirements (its logged wheel and pinned packages).
ENV_MANAGERS = ("local", "uv", "virtualenv", "conda")
#: uvicorn reads its ``--access-log`` option from this variable (MLflow passes no options).
ACCESS_LOG_ENV = "UVICORN_ACCESS_LOG"
#: uvicorn's compiled event loop and HTTP parser (the ``serve`` extra); uvloop has no Windows build.
FAST_HTTP = ("uvloop", "httptools") if sys.platform != "win32" else ("httptools",)


#: What uvicorn runs on without each package of the fast stack.
_FALLBACK = {"uvloop": "asyncio", "httptools": "h11"}


def missing_fast_http() -> list[str]:
    """The packages of uvicorn's fast HTTP stack that this environment lacks."""
    return [name for name in FAST_HTTP if importlib.util.find_spec(name) is None]


def http_stack() -> str:
    """The event loop and HTTP parser uvicorn runs on here, e.g. ``"uvloop + httptools"``."""
    missing = missing_fast_http()
    used = [n if n in FAST_HTTP and n not in missing else _FALLBACK[n] for n in _FALLBACK]
    return " + ".join(used)


@dataclass(frozen=True)
class ServeCommand:
    """The server process to start: its argv, its environment and what it serves."""

    argv: list[str]
    env: dict[str, str]
    name: str
    version: int
    url: str


def serve_command(
    cfg: Config,
    *,
    alias: str | None = None,
    version: int | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    env_manager: str = "local",
    cache_size: int | None = None,
    access_log: bool = False,
) -> ServeCommand:
    """The ``mlflow models serve`` command line for ``alias`` (or ``version``) of the set;
    ``access_log`` logs each request (otherwise ``$UVICORN_ACCESS_LOG`` decides, off if unset)."""
    if env_manager not in ENV_MANAGERS:
        raise ConfigError(f"env manager must be one of {', '.join(ENV_MANAGERS)}: {env_manager!r}")
    if not 0 < port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, got {port}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    served, _ = resolve_version(cfg, alias, version)
    missing = missing_fast_http() if env_manager == "local" else []
    if missing:
        log.warning(
            "%s not installed: MLflow's server falls back to %s, about 2 ms more per request; "
            "pip install 'manymodels[serve]'",
            " and ".join(missing),
            " and ".join(_FALLBACK[m] for m in missing),
        )
    tracking, registry = uris(cfg)
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking
    env["MLFLOW_REGISTRY_URI"] = registry
    # MLflow starts uvicorn (and uv, for env_manager=uv) by name: this interpreter's scripts first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a server log, not a tty
    if cache_size is not None:
        env[CACHE_SIZE_ENV] = str(cache_size)
    if access_log:
        env[ACCESS_LOG_ENV] = "true"
    env.setdefault(ACCESS_LOG_ENV, "false")
    name = cfg.mlflow.model_name
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "--model-uri",
        f"models:/{name}/{served}",
        "--env-manager",
        env_manager,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return ServeCommand(argv, env, name, served, f"http://{host}:{port}/invocations")


def wait_ready(
    proc: subprocess.Popen[Any], host: str, port: int, timeout: float, log: Path | None = None
) -> None:
    """Return once the server started as ``proc`` answers ``/ping``; SetupError if it exits
    or stays silent for ``timeout`` seconds (the tail of ``log`` says why)."""
    import http.client

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:] if log and log.exists() else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"the server exited with code {proc.returncode}:\n{tail()}")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SetupError(f"no answer on {host}:{port} within {timeout:.0f} s:\n{tail()}")
