"""The library travels with each registered set: its own wheel plus pinned requirements.

A server that builds the model's environment itself (Databricks Model Serving, ``mlflow models
serve`` with the ``uv`` or ``virtualenv`` env manager, ``mlflow models build-docker``) installs
``requirements.txt`` from a package index that may not have manymodels at all, or not this
version. So each set carries ``wheels/manymodels-<version>-py3-none-any.whl`` — built from the
installed package itself, byte for byte the code that trained the models, whether it was
installed from a wheel, from a source tree or in editable mode — and its requirements name that
wheel by path and pin every dependency the models' bytes rely on to the version that wrote them
(scikit-learn for skops-saved trees, Prophet for its JSON, pandas, numpy, ...). The packages of
the ``serve`` extra (uvicorn's compiled event loop and HTTP parser) are pinned too, with their
platform markers: a server that builds the environment then runs on the same HTTP stack as
``manymodels serve`` here.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
import zipfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

__all__ = ["WHEELS_FOLDER", "build_wheel", "pinned_requirements"]

WHEELS_FOLDER = "wheels"
_DIST = "manymodels"
#: A fixed timestamp keeps the wheel's bytes a function of the code alone.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}
#: The extra whose packages every set's requirements carry (see the module doc).
SERVER_EXTRA = "serve"
#: The extra's clause in a requirement's marker, as packaging writes it (with its ``and``).
_EXTRA_CLAUSE = re.compile(
    rf'\s*\band\s+extra == "{SERVER_EXTRA}"|extra == "{SERVER_EXTRA}"(\s+and\b)?\s*'
)


def _package_dir() -> Path:
    import manymodels

    return Path(manymodels.__file__).resolve().parent


def _version() -> str:
    try:
        return importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH=src)
        import manymodels

        return str(manymodels.__version__)


def _declared() -> list[str]:
    """The requirement lines of the installed distribution, or of the source tree's
    pyproject.toml when manymodels runs from a checkout without being installed."""
    try:
        return importlib.metadata.requires(_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = _package_dir().parent.parent / "pyproject.toml"
    try:
        import tomllib
    except ImportError:  # Python 3.10 without an installed distribution: nothing to read
        return []
    if not pyproject.is_file():
        return []
    with pyproject.open("rb") as handle:
        project = tomllib.load(handle).get("project", {})
    served = []  # as installed metadata writes them: the extra joins the line's own marker
    for line in project.get("optional-dependencies", {}).get(SERVER_EXTRA, []):
        name, _, marker = str(line).partition(";")
        own = f"({marker.strip()}) and " if marker.strip() else ""
        served.append(f"{name.strip()}; {own}extra == '{SERVER_EXTRA}'")
    return [str(line) for line in project.get("dependencies", [])] + served


def _requirements() -> list[tuple[Requirement, bool]]:
    """The declared requirements outside any extra, and those of the server extra (True)."""
    found = []
    for line in _declared():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        marker = str(req.marker) if req.marker is not None else ""
        if "extra" not in marker:
            found.append((req, False))
        elif _EXTRA_CLAUSE.search(marker):
            found.append((req, True))
    return found


def _core_requirements() -> list[Requirement]:
    """The declared requirements outside any extra."""
    return [req for req, served in _requirements() if not served]


def pinned_requirements() -> list[str]:
    """Each core and server requirement pinned to the installed version (``name==x.y.z``), a
    server requirement with its platform marker (``uvloop==x.y.z; sys_platform != "win32"``)."""
    pins = []
    for req, served in _requirements():
        marker = _EXTRA_CLAUSE.sub("", str(req.marker)).strip() if served else ""
        suffix = f"; {marker}" if marker else ""
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            # not installed here (an optional import, a server package): keep its range
            pins.append(f"{req.name}{req.specifier}{suffix}")
            continue
        pins.append(f"{req.name}=={installed}{suffix}")
    return pins


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _metadata(version: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {_DIST}",
        f"Version: {version}",
        "Summary: manymodels, as installed where this model set was registered",
        "Requires-Python: >=3.10",
        *(f"Requires-Dist: {req}" for req in _core_requirements()),
    ]
    return "\n".join(lines) + "\n"


def build_wheel(folder: Path) -> Path:
    """Write ``manymodels-<version>-py3-none-any.whl`` of the installed package into ``folder``."""
    version = _version()
    safe_version = re.sub(r"[^\w.]+", "_", version)
    info = f"{_DIST}-{safe_version}.dist-info"
    files: dict[str, bytes] = {}
    root = _package_dir()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_dir() or _SKIP_DIRS & set(rel.parts) or path.suffix in _SKIP_SUFFIXES:
            continue
        files[f"{_DIST}/{rel.as_posix()}"] = path.read_bytes()
    files[f"{info}/METADATA"] = _metadata(version).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: manymodels\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\nmanymodels = manymodels.cli:main\n"
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{_DIST}-{safe_version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as whl:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            whl.writestr(entry, data)
    return target
