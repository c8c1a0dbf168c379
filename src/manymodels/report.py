"""A self-contained offline HTML report of the tables: forecasts, metrics, promotions, failures."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from manymodels.config import Config
from manymodels.errors import DataError, SetupError
from manymodels.tables import TableStore, open_store

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_report"]

log = logging.getLogger(__name__)

# name: (layer, table, the CLI verb that writes it)
_TABLES = {
    "sales": ("silver", "sales", "clean"),
    "ledger": ("gold", "model_ledger", "train"),
    "promotions": ("gold", "promotions", "promote"),
    "quality": ("gold", "model_quality", "promote"),
    "predictions": ("gold", "predictions", "score"),
}
_METRICS = ("wape", "mase", "smape", "bias", "coverage")
_STATUSES = ("ok", "failed", "skipped")
_METRIC_COLS = [*_METRICS, *(f"baseline_{m}" for m in _METRICS)]
_LEDGER_COLS = ["run_id", "trained_at", "status", "error", "family", "n_obs", *_METRIC_COLS]
_PRED_COLS = ["ds", "yhat", "yhat_lower", "yhat_upper", "model_version", "scoring_job", "scored_at"]
_STYLE = (
    "body{font-family:sans-serif;margin:2em auto;max-width:70em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:.9em}"
    "th{background:#f0f0f0}.note{color:#666;font-style:italic}img{max-width:100%}"
)


@dataclass
class _Data:
    """What the sections read: each table (None when it does not exist) and the options."""

    cfg: Config
    keys: list[str]
    n_sample: int
    n_worst: int
    sales: pa.Table | None  # keys, ds, y: kept in Arrow, filtered before pandas
    ledger: pd.DataFrame | None  # the latest training run, one row per key
    promos: pd.DataFrame | None  # the latest promotion run, one row per key
    quality: pd.DataFrame | None
    preds: pd.DataFrame | None  # the configured scoring job's rows


def write_report(
    cfg: Config,
    path: str | os.PathLike[str] | None = None,
    *,
    store: TableStore | None = None,
    n_sample: int = 6,
    n_worst: int = 6,
) -> Path:
    """Write one HTML file (plots embedded as PNG, no external links); return its path.

    The plots are drawn on figures with their own Agg canvas: matplotlib's backend and pyplot's
    figures (a notebook's inline plots) are left as they were.
    """
    try:
        import matplotlib  # noqa: F401 - the plots need it; say so before any work
    except ImportError:
        raise SetupError(
            "the report draws its plots with matplotlib, which is not installed: "
            "pip install 'manymodels[local]' (or matplotlib)"
        ) from None
    store = store or open_store(cfg)
    keys = list(cfg.data.keys)
    refs = {name: store.ref(layer, table) for name, (layer, table, _) in _TABLES.items()}
    present = {name for name, ref in refs.items() if store.exists(ref)}
    if not present:
        raise DataError(
            f"no manymodels tables in the work folder {cfg.home_path}: run the pipeline first "
            "(`manymodels ingest`, `clean`, `train`, `promote`, `score`, or `manymodels demo`)"
        )

    def read(name: str, wanted: Sequence[str]) -> Any:
        """Only the wanted columns the table has (never the ledger's model bytes) as pandas."""
        if name not in present:
            return None
        names = set(store.schema(refs[name]).names)
        cols = [c for c in dict.fromkeys([*keys, *wanted]) if c in names and c != "model"]
        table = store.read_arrow(refs[name], columns=cols)
        return table if name == "sales" else table.to_pandas()

    promo_cols = ["promotion_run_id", "decided_at", "decision", "reason"]
    data = _Data(
        cfg,
        keys,
        n_sample,
        n_worst,
        sales=read("sales", ["ds", "y"]),
        ledger=_latest(read("ledger", _LEDGER_COLS), keys, "run_id", "trained_at"),
        promos=_latest(read("promotions", promo_cols), keys, "promotion_run_id", "decided_at"),
        quality=read("quality", ["family", "champion_version", *_METRIC_COLS]),
        preds=_predictions(read("predictions", _PRED_COLS), keys, cfg.score.job),
    )
    body = [section(data) for section in (_header, _forecasts, _metrics, _promotions, _failures)]
    head = f'<meta charset="utf-8"><title>manymodels report</title><style>{_STYLE}</style>'
    top = f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>\n<body>'
    out = Path(path) if path is not None else cfg.home_path / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([top, *body, "</body></html>\n"]), encoding="utf-8")
    log.info("report written to %s", out)
    return out


def _latest(frame: pd.DataFrame | None, keys: list[str], run: str, at: str) -> pd.DataFrame | None:
    """The rows of the run with the latest timestamp, one per key."""
    if frame is None or frame.empty or run not in frame:
        return None if frame is None or frame.empty else frame
    frame = frame.sort_values(at, kind="stable") if at in frame else frame
    rows = frame[frame[run] == frame[run].iloc[-1]]
    return rows.drop_duplicates(keys, keep="last").reset_index(drop=True)


def _predictions(preds: pd.DataFrame | None, keys: list[str], job: str) -> pd.DataFrame | None:
    """The configured scoring job's rows (when it has any), the latest per key and date."""
    if preds is None or not {"ds", "yhat"} <= set(preds):
        return None if preds is None else preds.iloc[:0]
    if "scoring_job" in preds and (preds["scoring_job"] == job).any():
        preds = preds[preds["scoring_job"] == job]
    preds = preds.sort_values("scored_at", kind="stable") if "scored_at" in preds else preds
    preds = preds.drop_duplicates([*keys, "ds"], keep="last")
    return preds.assign(ds=pd.to_datetime(preds["ds"]))


def _unique_keys(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.select(keys).group_by(keys).aggregate([])


def _actuals(table: pa.Table, keys: list[str], chosen: pd.DataFrame, window: int) -> pd.DataFrame:
    """The last ``window`` rows of each chosen key, filtered in Arrow before pandas."""
    mask = pa.array(np.ones(table.num_rows, dtype=bool))
    for k in keys:
        values = pa.array(chosen[k].unique()).cast(table.schema.field(k).type)
        mask = pc.and_(mask, pc.is_in(table[k], value_set=values))
    rows = table.filter(mask).to_pandas().merge(chosen[keys], on=keys)
    rows["ds"] = pd.to_datetime(rows["ds"])
    return rows.sort_values([*keys, "ds"]).groupby(keys, sort=False).tail(window)


def _season(cfg: Config) -> int:
    """train.season_length, else 52 weekly, 12 monthly, 24 hourly, 7 daily."""
    return cfg.train.season_length or {"W": 52, "M": 12, "H": 24}.get(cfg.data.freq[0].upper(), 7)


def _label(frame: pd.DataFrame, keys: list[str]) -> pd.Series[str]:
    """``store=1, item=3`` per row."""
    label = keys[0] + "=" + frame[keys[0]].astype(str)
    for k in keys[1:]:
        label = label + f", {k}=" + frame[k].astype(str)
    return label.rename("key")


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, na_rep="", float_format="{:.3f}".format)


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _missing(name: str) -> str:
    return f'<p class="note">no data yet: run <code>manymodels {_TABLES[name][2]}</code></p>'


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def _figure(w: float, h: float, nrows: int = 1, ncols: int = 1, left: float = 0.6) -> Any:
    """A figure on its own Agg canvas (never pyplot's) and its axes grid, margins fixed in
    inches (cheaper than a tight bounding box)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(left=left / w, right=1 - 0.2 / w, bottom=0.5 / h, top=1 - 0.35 / h)
    fig.subplots_adjust(hspace=0.45, wspace=0.15)
    return fig, axes


def _png(fig: Figure, alt: str) -> str:
    """The figure as an embedded PNG (the figure is not pyplot's: nothing to close)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _series(keys: list[str], chosen: pd.DataFrame, frames: Sequence[Any], alt: str) -> str:
    """One panel per chosen key: recent actuals, the forecast and its shaded interval."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    n = len(chosen)
    nrows, ncols = math.ceil(n / 2), min(n, 2)
    fig, axes = _figure(11, 0.4 + 2.3 * nrows, nrows, ncols, left=0.5)
    empty = pd.DataFrame(columns=["ds", "y", "yhat", "yhat_lower", "yhat_upper"])
    groups = [{} if f is None else dict(iter(f.groupby(keys))) for f in frames]
    for i, (ax, label) in enumerate(zip(axes.flat, _label(chosen, keys), strict=False)):
        key = tuple(chosen[keys].iloc[i])
        act, pred = (g.get(key, empty) for g in groups)
        ax.plot(act["ds"], act["y"].astype(float), color="#333", lw=1, label="actual")
        ax.plot(pred["ds"], pred["yhat"].astype(float), color="#1f77b4", lw=1.5, label="forecast")
        if {"yhat_lower", "yhat_upper"} <= set(pred) and len(pred):
            low, high = pred["yhat_lower"].astype(float), pred["yhat_upper"].astype(float)
            ax.fill_between(pred["ds"], low, high, color="#1f77b4", alpha=0.2, label="interval")
        locator = AutoDateLocator(maxticks=7)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    return _png(fig, alt)


def _header(d: _Data) -> str:
    ledger, preds, none = d.ledger, d.preds, "—"
    n_keys: Any = none if ledger is None else len(ledger)
    if d.sales is not None:
        n_keys = _unique_keys(d.sales, d.keys).num_rows
    status = ledger["status"].value_counts() if ledger is not None else None
    version: Any = none
    for frame, col in ((d.quality, "champion_version"), (preds, "model_version")):
        if frame is not None and col in frame and frame[col].notna().any():
            version = frame[col].max()
            break
    rows = [
        ("keys", n_keys),
        ("training run", ledger["run_id"].iloc[0] if ledger is not None and len(ledger) else none),
        *((f"models {s}", none if status is None else status.get(s, 0)) for s in _STATUSES),
        ("champion version", version),
        (f"prediction rows (job {d.cfg.score.job})", none if preds is None else len(preds)),
        ("generated", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("work folder", str(d.cfg.home_path)),
    ]
    frame = pd.DataFrame(rows, columns=["", "value"]).astype({"value": str})
    return "<h1>manymodels report</h1>\n" + _table(frame)


def _forecasts(d: _Data) -> str:
    keys, ledger, title = d.keys, d.ledger, "Actuals and forecast with intervals"
    parts = [_missing(n) for n, f in (("sales", d.sales), ("predictions", d.preds)) if f is None]
    if d.preds is not None and len(d.preds):
        pool = d.preds[keys]
    elif ledger is not None and len(ledger):
        pool = ledger[keys]
    elif d.sales is not None:
        pool = _unique_keys(d.sales, keys).to_pandas()
    else:
        return _section(title, *parts)
    pool = pool.drop_duplicates().sort_values(keys).reset_index(drop=True)
    picks = np.random.default_rng(0).choice(len(pool), min(max(d.n_sample, 0), len(pool)), False)
    sample = pool.iloc[np.sort(picks)]
    ranked, among = d.quality, " among champions"
    if ranked is None or "wape" not in ranked:
        ranked, among = (None if ledger is None else ledger[ledger["status"] == "ok"]), ""
    worst = pool.iloc[:0]
    if ranked is not None and "wape" in ranked and d.n_worst > 0:
        worst = ranked[np.isfinite(ranked["wape"].astype(float))].nlargest(d.n_worst, "wape")
    chosen = pd.concat([sample[keys], worst[keys]]).drop_duplicates()
    window = max(3 * _season(d.cfg), 2 * d.cfg.score.horizon)
    frames = (  # only the chosen keys' rows: a report over 10,000 keys plots a dozen
        None if d.sales is None or not len(chosen) else _actuals(d.sales, keys, chosen, window),
        None if d.preds is None else d.preds.merge(chosen, on=keys),
    )
    if len(sample):
        parts.append(f"<h3>Sample of {len(sample)} keys (seeded)</h3>")
        parts.append(_series(keys, sample, frames, "sample keys"))
    if d.n_worst > 0:
        parts.append(f"<h3>Worst keys by WAPE{among}</h3>")
        if ranked is None:
            parts.append(_missing("ledger"))
        elif not len(worst):
            parts.append(_note("no finite WAPE values to rank"))
        else:
            if not among:
                parts.append(_note("no champions yet: ranking the latest training run's models"))
            cols = [c for c in ("family", "wape", "baseline_wape", "mase") if c in worst]
            parts.append(_table(pd.concat([_label(worst, keys), worst[cols]], axis=1)))
            parts.append(_series(keys, worst, frames, "worst keys"))
    return _section(title, *parts)


def _metrics(d: _Data) -> str:
    from matplotlib.ticker import MaxNLocator

    title, ledger = "Metric distributions", d.ledger
    if ledger is None:
        return _section(title, _missing("ledger"))
    ok = ledger[ledger["status"] == "ok"]
    parts = [_note(f"{len(ok):,} ok models of training run {ledger['run_id'].iloc[0]}")]
    for m in ("wape", "mase"):
        cols = {"model": m, "seasonal naive": f"baseline_{m}"}
        arrays = {n: ok[c].astype(float).to_numpy() for n, c in cols.items() if c in ok}
        series = {n: a[np.isfinite(a)] for n, a in arrays.items()}
        both = np.concatenate([np.zeros(0), *series.values()])
        if not both.size:
            continue
        edges = np.histogram_bin_edges(np.clip(both, None, np.quantile(both, 0.99)), bins=30)
        fig, ((ax,),) = _figure(7, 3)
        for name, values in series.items():
            ax.hist(np.clip(values, None, edges[-1]), bins=list(edges), alpha=0.5, label=name)
        ax.set(title=f"{m.upper()}: model vs seasonal-naive baseline", xlabel=m, ylabel="keys")
        ax.legend()
        parts.append(_png(fig, f"{m} histogram"))
    if "family" in ok and len(ok):
        counts = ok["family"].fillna("?").astype(str).value_counts().sort_values()
        fig, ((ax,),) = _figure(7, 1.2 + 0.35 * len(counts), left=1.6)
        ax.barh(counts.index, counts.to_numpy(), color="#1f77b4")
        ax.set(title="models per family", xlabel="keys")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        parts.append(_png(fig, "family counts"))
    return _section(title, *parts)


def _promotions(d: _Data) -> str:
    title, promos = "Promotion decisions", d.promos
    if promos is None or "decision" not in promos:
        return _section(title, _missing("promotions"))
    run = promos["promotion_run_id"].iloc[0] if "promotion_run_id" in promos and len(promos) else ""
    counts = promos["decision"].value_counts().rename_axis("decision").reset_index(name="keys")
    parts = [_note(f"promotion run {run}"), _table(counts)]
    if "reason" in promos:
        reason = promos["reason"].fillna("").astype(str)
        rule = reason.str.split(":").str[0].str.strip().rename("reason")
        top = pd.DataFrame(reason.groupby([promos["decision"], rule]).agg(["size", "first"]))
        top.columns = pd.Index(["keys", "example"])
        top = top.sort_values("keys", ascending=False, kind="stable").head(15).reset_index()
        parts += ["<h3>Most common reasons</h3>", _table(top)]
    return _section(title, *parts)


def _failures(d: _Data) -> str:
    title, ledger = "Failures", d.ledger
    if ledger is None:
        return _section(title, _missing("ledger"))
    bad = ledger[ledger["status"].isin(["failed", "skipped"])].sort_values(["status", *d.keys])
    error = ledger.get("error", pd.Series("", index=ledger.index)).fillna("").astype(str)
    fallbacks = int(((ledger["status"] == "ok") & error.str.startswith("fallback")).sum())
    parts = [_note(f"{len(bad):,} failed or skipped keys; {fallbacks:,} ok keys use the fallback")]
    if len(bad):
        err = error.loc[bad.index].replace("", "(no message)").rename("error")
        cls = err.str.split(":", n=1).str[0].str.strip().str[:80].rename("error class")
        counts = pd.concat([bad["status"], cls], axis=1).value_counts().reset_index(name="keys")
        listed = bad.head(50)
        table = pd.concat([_label(listed, d.keys), listed["status"], err.loc[listed.index]], axis=1)
        parts += [_table(counts), f"<h3>Failed and skipped keys (first {len(listed)})</h3>"]
        parts.append(_table(table))
    return _section(title, *parts)
