"""Typed configuration: conf/base.yml, extra files and dotted overrides, validated once."""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from manymodels.errors import ConfigError

__all__ = [
    "PRESETS",
    "Config",
    "DataConfig",
    "EnsembleConfig",
    "MlflowConfig",
    "PromoteConfig",
    "RegressorConfig",
    "ScoreConfig",
    "TablesConfig",
    "TrainConfig",
    "TuningConfig",
    "load_config",
]

FillPolicy = Literal["zero", "nan", "ffill", "none", "missing"]
DuplicatePolicy = Literal["sum", "mean", "first", "last", "max"]
KeyType = Literal["string", "int"]

_FREQ_RE = re.compile(r"^(D|W-(MON|TUE|WED|THU|FRI|SAT|SUN)|W|MS|M|ME|H|h)$")


@dataclass
class RegressorConfig:
    """How the model families use one regressor (``data.regressor_options.<name>``)."""

    future: bool = True
    transform: Literal["none", "log", "log1p"] = "none"
    lags: list[int] = field(default_factory=list)
    leads: list[int] = field(default_factory=list)


@dataclass
class DataConfig:
    """Where the columns are and what a clean series looks like."""

    keys: list[str] = field(default_factory=lambda: ["store", "item"])
    time_col: str = "ds"
    target_col: str = "y"
    freq: str = "D"
    regressors: list[str] = field(default_factory=list)
    regressor_options: dict[str, RegressorConfig] = field(default_factory=dict)
    fill: FillPolicy = "missing"
    duplicates: DuplicatePolicy = "sum"
    date_format: str | None = None
    key_types: dict[str, KeyType] = field(default_factory=dict)
    max_gap_periods: int | None = None


@dataclass
class TablesConfig:
    """Which backend holds the bronze/silver/gold tables and what they are called."""

    backend: Literal["local", "spark"] = "local"
    format: Literal["delta", "parquet"] = "delta"
    catalog: str | None = None
    bronze: str = "bronze"
    silver: str = "silver"
    gold: str = "gold"
    #: The local backend cleans bronze of up to this many rows in its own process (one pandas
    #: frame, about 0.8 GB per million rows); larger bronze is cleaned by Spark tasks, whole
    #: keys at a time, so the driver's memory does not grow with the data.
    in_process_rows: int = 2_000_000


@dataclass
class TuningConfig:
    """Hyperparameter search inside each partition (hyperopt)."""

    max_trials: int = 0
    timeout_seconds: float = 30.0
    metric: str | None = None


#: The per-key ensemble size of each ``train.preset`` (``train.ensemble.top_k`` overrides it).
#: Off in fast and balanced: on Rossmann (120 stores) the median of the top 3 raised RMSPE from
#: 0.134 to 0.152, its members (chosen on the same windows) looking better than they forecast.
PRESET_ENSEMBLE: dict[str, int] = {"fast": 0, "balanced": 0, "best": 3}

#: The candidate families of each ``train.preset`` (``train.families`` overrides them).
PRESETS: dict[str, tuple[str, ...]] = {
    "fast": ("trend_season", "seasonal_naive", "ridge"),
    "balanced": ("trend_season", "seasonal_naive", "ridge", "auto_ets", "auto_theta", "tsb"),
    "best": (
        "trend_season",
        "seasonal_naive",
        "ridge",
        "auto_ets",
        "auto_theta",
        "mstl",
        "auto_arima",
        "prophet",
        "tsb",
        "imapa",
    ),
}


@dataclass
class EnsembleConfig:
    """The per-key ensemble candidate: the top-k candidates on the selection windows
    (``top_k`` null: the preset's; 0: no ensemble)."""

    top_k: int | None = None
    method: Literal["median", "mean"] = "median"


@dataclass
class TrainConfig:
    """Which families a partition tries, how it is backtested, and the error threshold."""

    preset: Literal["fast", "balanced", "best"] | None = "balanced"
    families: list[str] | None = None
    transform: Literal["none", "log1p", "boxcox", "auto"] = "auto"
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    select_metric: str = "wape"
    select_margin: float = 0.05
    horizon: int = 28
    n_windows: int = 3
    step: int | None = None
    min_obs: int | None = None
    season_length: int | None = None
    interval_width: float = 0.8
    holidays_country: str | None = "US"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    fallback: str | None = "seasonal_naive"
    max_failed_fraction: float = 0.1
    max_model_age_days: float = 7.0
    regressor_defaults: dict[str, float] = field(default_factory=dict)
    tasks: int | None = None
    rows_per_call: int = 50_000
    #: The model granularity: null = ``data.keys`` (one model per series), a subset of the
    #: keys (one pooled model per value, e.g. ``[store]``) or ``[]`` (one model for all).
    partition_by: list[str] | None = None
    #: Rows one model partition may hold: a bigger group stops before any fit, named.
    max_group_rows: int = 20_000_000

    def group_columns(self, keys: list[str]) -> list[str]:
        """The columns naming a model partition (``partition_by``, else the series keys)."""
        return list(keys) if self.partition_by is None else list(self.partition_by)

    @property
    def candidate_families(self) -> list[str]:
        """``families`` when given, else the preset's families."""
        if self.families is not None:
            return list(self.families)
        if self.preset is None:
            raise ConfigError("set train.families or train.preset (fast, balanced or best)")
        return list(PRESETS[self.preset])

    @property
    def ensemble_size(self) -> int:
        """``ensemble.top_k`` when given, else the preset's (0 without a preset)."""
        if self.ensemble.top_k is not None:
            return self.ensemble.top_k
        return PRESET_ENSEMBLE[self.preset] if self.preset is not None else 0


@dataclass
class PromoteConfig:
    """Business rules a candidate must pass to become a key's champion."""

    thresholds: dict[str, float] = field(default_factory=dict)
    must_beat_baseline: bool = True
    baseline_metric: str = "wape"
    champion_margin: float = 0.0
    compare_metric: str = "wape"
    min_history: int = 0


@dataclass
class ScoreConfig:
    """Batch scoring: horizon, model to use, error threshold and BI grouping."""

    horizon: int = 28
    alias: str = "champion"
    job: str = "batch"
    max_failed_fraction: float = 0.1
    summary_levels: list[list[str]] = field(default_factory=lambda: [["store"]])
    keys_per_call: int = 64


@dataclass
class MlflowConfig:
    """Tracking and registry; null URIs mean a sqlite store in the work folder."""

    tracking_uri: str | None = None
    registry_uri: str | None = None
    experiment: str = "manymodels"
    model_name: str = "manymodels_forecast"


@dataclass
class Config:
    """The whole typed configuration of a manymodels project."""

    home: str = ".manymodels"
    data: DataConfig = field(default_factory=DataConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted-key overrides applied (``replace(**{"train.horizon": 7})``)."""
        raw = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(raw, key, value)
        return _build(Config, raw, "")


# --------------------------------------------------------------------------- loading


def _default_base() -> Path | None:
    """The project's ``conf/base.yml`` in the working directory, if there is one."""
    candidate = Path.cwd() / "conf" / "base.yml"
    return candidate if candidate.is_file() else None


def load_config(
    conf: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    base: str | os.PathLike[str] | None = None,
) -> Config:
    """Load ``conf/base.yml`` (or ``base``), then extra files, then overrides.

    ``overrides`` is a mapping of dotted keys or ``key=value`` strings (values parsed as YAML).
    The work folder is ``home``, else ``$MANYMODELS_HOME``, else the config's ``home``.
    """
    raw: dict[str, Any] = {}
    base_path = Path(base) if base is not None else _default_base()
    if base_path is not None:
        raw = _merge(raw, _read_yaml(base_path))
    if conf is not None:
        files = [conf] if isinstance(conf, (str, os.PathLike)) else list(conf)
        for f in files:
            raw = _merge(raw, _read_yaml(Path(f)))
    for key, value in _parse_overrides(overrides):
        _set_dotted(raw, key, value)
    if home is not None:
        raw["home"] = str(home)
    elif os.environ.get("MANYMODELS_HOME"):
        raw["home"] = os.environ["MANYMODELS_HOME"]
    cfg = _build(Config, raw, "")
    _check(cfg)
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist; pass an existing YAML file to --conf"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {_yaml_where(path, exc)} is not valid YAML: {_yaml_problem(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top, not {type(data).__name__}"
        )
    return data


def _yaml_where(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:column`` of a YAML error (the parser's own mark, 1-based)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint in one line, without its source dump."""
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    text = "; ".join(str(p) for p in parts if p) or str(exc).splitlines()[0]
    return " ".join(text.split())


def _parse_overrides(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[tuple[str, Any]]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    out: list[tuple[str, Any]] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} must look like dotted.key=value (e.g. train.horizon=14)"
            )
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out.append((key.strip(), value))
    return out


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _build(cls: type[Any], raw: Any, path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config key {path or '<top>'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]}; known keys under {path or 'the top'}: "
            + ", ".join(sorted(names))
        )
    kwargs = {
        name: _coerce(hints[name], value, f"{path}.{name}" if path else name)
        for name, value in raw.items()
    }
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp if isinstance(tp, type) else type(tp), value, path)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {path} may not be null")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"config key {path} must be one of {', '.join(map(str, allowed))}; got {value!r}"
            )
        return value
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key {path} must be a list, got {value!r}")
        return [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {path} must be a mapping, got {value!r}")
        return {str(k): _coerce(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {path} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {path} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {path} must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key {path}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _check_partition_by(t: TrainConfig, keys: list[str]) -> None:
    if t.max_group_rows < 1:
        raise ConfigError(
            f"config key train.max_group_rows must be at least 1, got {t.max_group_rows}"
        )
    if t.partition_by is None:
        return
    alien = [c for c in t.partition_by if c not in keys]
    if alien:
        raise ConfigError(
            f"config key train.partition_by names {alien}, which are not among data.keys "
            f"{keys}: a model partition is a group of series, so list some of the keys "
            "(or [] for one model over all series)"
        )
    if len(set(t.partition_by)) != len(t.partition_by):
        raise ConfigError(f"config key train.partition_by names a column twice: {t.partition_by}")


_METRICS = {"mae", "rmse", "mape", "smape", "wape", "mase", "bias", "coverage"}


def _check(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    d = cfg.data
    if not d.keys:
        raise ConfigError("config key data.keys must name at least one partition column")
    if not _FREQ_RE.match(d.freq):
        raise ConfigError(
            f"config key data.freq={d.freq!r} is not supported; "
            "use D, W-<DAY> (e.g. W-SUN), MS or M"
        )
    cols = [*d.keys, d.time_col, d.target_col, *d.regressors]
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise ConfigError(
            f"column {dup[0]} is named twice among data.keys/time_col/target_col/regressors"
        )
    if cfg.tables.in_process_rows < 0:
        raise ConfigError(
            "config key tables.in_process_rows must be 0 (always clean with Spark tasks) or "
            f"more, got {cfg.tables.in_process_rows}"
        )
    t = cfg.train
    for name, value in (("train.horizon", t.horizon), ("train.n_windows", t.n_windows)):
        if value < 1:
            raise ConfigError(f"config key {name} must be at least 1, got {value}")
    if t.tasks is not None and t.tasks < 1:
        raise ConfigError(f"config key train.tasks must be at least 1 (or null), got {t.tasks}")
    if t.rows_per_call < 0:
        raise ConfigError(
            f"config key train.rows_per_call must be 0 (one key per call) or more, "
            f"got {t.rows_per_call}"
        )
    if t.step is not None and t.step < 1:
        raise ConfigError(f"config key train.step must be at least 1, got {t.step}")
    _check_partition_by(t, d.keys)
    if not 0.0 <= t.select_margin < 1.0:
        raise ConfigError(
            f"config key train.select_margin must lie in [0, 1), got {t.select_margin}"
        )
    if not 0.0 <= t.max_failed_fraction <= 1.0:
        raise ConfigError("config key train.max_failed_fraction must lie between 0 and 1")
    if not 0.0 < t.interval_width < 1.0:
        raise ConfigError("config key train.interval_width must lie strictly between 0 and 1")
    if t.families is not None and not t.families:
        raise ConfigError("config key train.families must name at least one model family")
    if t.families is None and t.preset is None:
        raise ConfigError("set train.families or train.preset (fast, balanced or best)")
    if t.ensemble.top_k is not None and t.ensemble.top_k < 0:
        raise ConfigError(
            "config key train.ensemble.top_k must be 0 (no ensemble) or more, "
            f"got {t.ensemble.top_k}"
        )
    for name, opt in cfg.data.regressor_options.items():
        if name not in cfg.data.regressors:
            raise ConfigError(
                f"data.regressor_options.{name}: {name!r} is not in data.regressors "
                f"{cfg.data.regressors}; add it there or remove its options"
            )
        bad = [v for v in [*opt.lags, *opt.leads] if v < 1]
        if bad:
            raise ConfigError(
                f"data.regressor_options.{name}: lags and leads must be >= 1, not {bad}"
            )
        if opt.leads and not opt.future:
            raise ConfigError(
                f"data.regressor_options.{name}: leads need future values; set future: true"
            )
    for name in (t.select_metric, cfg.promote.baseline_metric, cfg.promote.compare_metric):
        if name not in _METRICS:
            raise ConfigError(
                f"metric {name!r} is unknown; use one of {', '.join(sorted(_METRICS))}"
            )
    for name in cfg.promote.thresholds:
        if name not in _METRICS:
            raise ConfigError(
                f"promote.thresholds.{name}: unknown metric; "
                f"use one of {', '.join(sorted(_METRICS))}"
            )
    if cfg.score.keys_per_call < 1:
        raise ConfigError(
            f"config key score.keys_per_call must be at least 1, got {cfg.score.keys_per_call}"
        )
    if cfg.score.horizon < 1:
        raise ConfigError(f"config key score.horizon must be at least 1, got {cfg.score.horizon}")
    _check_more(cfg)


#: A column name Spark SQL and the tables take as written: no backtick, dot or control char,
#: no surrounding spaces.
_BAD_COLUMN = re.compile(r"[`.\x00-\x1f]|^\s|\s$|^$")


def _at_least(name: str, value: float | None, low: float, null_ok: bool = True) -> None:
    if value is None and null_ok:
        return
    if value is None or value < low:
        raise ConfigError(f"config key {name} must be at least {low:g}, got {value!r}")


def _check_more(cfg: Config) -> None:
    """The checks added for fail-fast configuration: every value is usable before any work."""
    d, t, s = cfg.data, cfg.train, cfg.score
    for key, cols in (
        ("data.keys", d.keys),
        ("data.time_col", [d.time_col]),
        ("data.target_col", [d.target_col]),
        ("data.regressors", d.regressors),
    ):
        for col in cols:
            if _BAD_COLUMN.search(col):
                raise ConfigError(
                    f"config key {key} names column {col!r}: a column name may not be empty, "
                    "hold a backtick, a dot or a control character, or start or end with "
                    "a space (Spark would misread it); rename the column in the source"
                )
    unknown = sorted(set(d.key_types) - set(d.keys))
    if unknown:
        raise ConfigError(
            f"config key data.key_types names {unknown}, which are not among data.keys {d.keys}"
        )
    _at_least("data.max_gap_periods", d.max_gap_periods, 1)
    _at_least("train.min_obs", t.min_obs, 1)
    _at_least("train.season_length", t.season_length, 1)
    _at_least("train.max_model_age_days", t.max_model_age_days, 0)
    _at_least("train.tuning.max_trials", t.tuning.max_trials, 0)
    _at_least("train.tuning.timeout_seconds", t.tuning.timeout_seconds, 0)
    _at_least("promote.min_history", cfg.promote.min_history, 0)
    _at_least("promote.champion_margin", cfg.promote.champion_margin, 0)
    if t.tuning.metric is not None and t.tuning.metric not in _METRICS:
        raise ConfigError(
            f"config key train.tuning.metric: metric {t.tuning.metric!r} is unknown; use one "
            f"of {', '.join(sorted(_METRICS))} (or null for train.select_metric)"
        )
    if not 0.0 <= s.max_failed_fraction <= 1.0:
        raise ConfigError(
            f"config key score.max_failed_fraction must lie between 0 and 1, "
            f"got {s.max_failed_fraction}"
        )
    if s.summary_levels == [["store"]] and "store" not in d.keys:
        s.summary_levels = [[d.keys[0]]]  # the default grouping: by the first key column
    for i, level in enumerate(s.summary_levels):  # [] is the grand total
        bad = [c for c in level if c not in d.keys]
        if bad:
            raise ConfigError(
                f"config key score.summary_levels[{i}] = {level} must name key columns "
                f"(or be [] for the total); {bad} are not among data.keys {d.keys}"
            )
    _check_country(t.holidays_country)


def _check_country(country: str | None) -> None:
    """``train.holidays_country`` must be a country the holidays package knows."""
    if not country:
        return
    try:
        import holidays
    except ImportError:  # pragma: no cover - holidays is a dependency
        return
    known = holidays.list_supported_countries()
    if country not in known:
        close = [c for c in known if c.upper() == country.upper()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"config key train.holidays_country = {country!r} is not a country the holidays "
            f"package knows{hint}; use an ISO code such as US, DE or GB, or null for no holidays"
        )
