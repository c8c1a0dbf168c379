"""Model bytes can never run code: no pickle is loaded, skops types are checked, size bounded."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from manymodels.errors import IntegrityError, ModelError
from manymodels.models import ForecastSpec, dumps, get_family, loads, serialize, sha256_hex

SPEC = ForecastSpec("D", 7)
TREES = ("hgb", "random_forest")


def history(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    t = np.arange(n)
    y = 50 + 5 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 1, n)
    return pd.DataFrame({"ds": pd.date_range("2022-01-02", periods=n, freq="D"), "y": y})


def future(model: Any, horizon: int = 10) -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.date_range(model.last_ds, periods=horizon + 1, freq="D")[1:]})


class _RunsCode:
    """A pickle that, when loaded, writes the marker file through ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def blob_of(
    header: dict[str, Any], payload: bytes, version: int = serialize.FORMAT_VERSION
) -> bytes:
    raw = json.dumps(header).encode()
    return b"MMDL" + bytes([version]) + zlib.compress(struct.pack(">I", len(raw)) + raw + payload)


def parts(blob: bytes) -> tuple[dict[str, Any], bytes]:
    body = zlib.decompress(blob[5:])
    (size,) = struct.unpack(">I", body[:4])
    return json.loads(body[4 : 4 + size]), body[4 + size :]


def with_schema(archive: bytes, edit: Any) -> bytes:
    """The skops archive with its schema.json changed by ``edit`` (members stay stored)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "schema.json":
                data = json.dumps(edit(json.loads(data))).encode()
            dst.writestr(info.filename, data, compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


@pytest.fixture(scope="module", params=TREES)
def tree_model(request: pytest.FixtureRequest) -> Any:
    return get_family(request.param)(SPEC).fit(history())


def test_the_crafted_pickle_really_runs_code(tmp_path: Path) -> None:
    """The payload of the tests below does execute when unpickled (so refusal means safety)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


@pytest.mark.parametrize("family", TREES)
def test_tree_families_round_trip_without_pickle(family: str) -> None:
    model = get_family(family)(SPEC).fit(history())
    blob = dumps(model)
    header, payload = parts(blob)
    assert header["state"]["estimator_format"] == "skops"
    assert zipfile.is_zipfile(io.BytesIO(payload)) and b"\x80\x04\x95" not in payload[:3]
    loaded = loads(blob, sha256=sha256_hex(blob))
    pd.testing.assert_frame_equal(loaded.predict(future(model)), model.predict(future(model)))


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("random_forest", {"max_depth": None, "max_features": "sqrt", "n_estimators": 3}),
        ("random_forest", {"max_features": 0.5, "min_samples_leaf": 1, "n_estimators": 3}),
        ("hgb", {"max_iter": 5, "max_leaf_nodes": 4, "l2_regularization": 0.5}),
    ],
)
def test_trusted_types_cover_the_family_params(family: str, params: dict[str, Any]) -> None:
    model = get_family(family)(SPEC, params).fit(history())
    blob = dumps(model)
    loaded = loads(blob, sha256=sha256_hex(blob))
    pd.testing.assert_frame_equal(loaded.predict(future(model)), model.predict(future(model)))


@pytest.mark.parametrize("version", [1, serialize.FORMAT_VERSION])
@pytest.mark.parametrize("marked", [False, True])
def test_a_pickle_in_place_of_a_model_never_runs(
    tree_model: Any, tmp_path: Path, version: int, marked: bool
) -> None:
    """A crafted ledger row: a pickle payload with its own matching sha256 (as in v1 models, and
    with a header claiming skops) is refused with ModelError and never executes."""
    marker = tmp_path / "pwned"
    header, _ = parts(dumps(tree_model))
    if not marked:
        del header["state"]["estimator_format"]
    blob = blob_of(header, pickle.dumps(_RunsCode(marker)), version)
    with pytest.raises(IntegrityError, match="retrain the key") as info:
        loads(blob, sha256=sha256_hex(blob))
    assert isinstance(info.value, ModelError)
    assert not marker.exists()


def test_raw_pickle_bytes_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_RunsCode(marker))
    with pytest.raises(IntegrityError, match="not a manymodels model"):
        loads(blob, sha256=sha256_hex(blob))
    assert not marker.exists()


@pytest.mark.parametrize(
    "node",
    [
        {"__class__": "system", "__module__": "os", "__loader__": "ObjectNode", "content": {}},
        {
            "__class__": "function",
            "__module__": "builtins",
            "__loader__": "FunctionNode",
            "content": {"module_path": "os", "function": "system"},
        },
        {"__class__": "Popen", "__module__": "subprocess", "__loader__": "TypeNode"},
    ],
    ids=["object", "function", "type"],
)
def test_skops_archive_with_an_untrusted_type_is_refused(tree_model: Any, node: Any) -> None:
    header, payload = parts(dumps(tree_model))

    def inject(schema: dict[str, Any]) -> dict[str, Any]:
        schema["content"]["content"]["evil"] = node
        return schema

    blob = blob_of(header, with_schema(payload, inject))
    with pytest.raises(IntegrityError, match="outside the trusted list"):
        loads(blob, sha256=sha256_hex(blob))


def test_an_estimator_of_another_family_is_refused(tree_model: Any) -> None:
    other = "random_forest" if tree_model.family == "hgb" else "hgb"
    header, _ = parts(dumps(tree_model))
    _, foreign = parts(dumps(get_family(other)(SPEC).fit(history())))
    with pytest.raises(IntegrityError, match="outside the trusted list"):
        loads(blob_of(header, foreign))


def test_compressed_archive_members_are_refused(tree_model: Any) -> None:
    header, payload = parts(dumps(tree_model))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(payload)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(IntegrityError, match="compressed members"):
        loads(blob_of(header, out.getvalue()))


def test_a_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serialize, "MAX_MODEL_BYTES", 1 << 20)
    bomb = b"MMDL" + bytes([serialize.FORMAT_VERSION]) + zlib.compress(b"\0" * (64 << 20), 9)
    assert len(bomb) < 100_000
    with pytest.raises(IntegrityError, match="decompress to more than 1,048,576 bytes"):
        loads(bomb, sha256=sha256_hex(bomb))


def test_a_model_too_large_to_load_is_not_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    model = get_family("random_forest")(SPEC, {"n_estimators": 3}).fit(history())
    monkeypatch.setattr(serialize, "MAX_MODEL_BYTES", 10_000)
    with pytest.raises(ModelError, match="more than the 10,000 a model may"):
        dumps(model)


def test_truncated_and_corrupted_bytes_are_refused(tree_model: Any) -> None:
    blob = dumps(tree_model)
    with pytest.raises(IntegrityError, match="corrupted"):
        loads(blob[: len(blob) // 2])
    with pytest.raises(IntegrityError, match="do not match model_sha256"):
        loads(blob[:-1] + bytes([blob[-1] ^ 1]), sha256=sha256_hex(blob))


def test_no_model_loading_code_uses_pickle() -> None:
    root = Path(serialize.__file__).parents[1]
    for path in root.rglob("*.py"):
        if path.parts[-2] == "registry":  # MLflow's pyfunc wrapper, not model bytes
            continue
        text = path.read_text()
        for word in ("pickle.load", "cloudpickle", "joblib.load", "marshal.load", "dill."):
            assert word not in text, f"{path} uses {word}"


# --------------------------------------------------------------------- scoring


def test_scoring_refuses_bytes_that_differ_from_the_registered_sha256(tree_model: Any) -> None:
    from manymodels.forecast_key import INTEGRITY_PREFIX, load_verified

    blob = dumps(tree_model)
    row = {"model": blob, "model_sha256": sha256_hex(blob), "run_id": "r1"}
    assert load_verified(row).family == tree_model.family
    with pytest.raises(IntegrityError, match="do not match model_sha256"):
        load_verified({**row, "model": blob[:-1] + bytes([blob[-1] ^ 1])})
    with pytest.raises(IntegrityError, match="no model bytes with the registered sha256") as info:
        load_verified({**row, "model": None})
    assert f"{type(info.value).__name__}: ".startswith(INTEGRITY_PREFIX)


def test_the_cli_exits_3_on_an_integrity_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    from manymodels import cli

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise IntegrityError("the model bytes of 1 keys failed verification (e.g. store=1)")

    monkeypatch.setattr(importlib.import_module("manymodels.score"), "score", refuse)
    assert cli.main(["--home", str(tmp_path), "score"]) == 3
    assert "error: the model bytes of 1 keys failed verification" in capsys.readouterr().err
