"""Data-quality metrics of one observation run, per data level (``iactpipe-quality``).

Each module reads one data level and fills a :class:`~.status.MetricSet`:

- :mod:`.dl0`: trigger rates per telescope and of the array vs time, gaps in the event
  timing, pedestal mean / noise per pixel (R1 pre-pulse samples, or the charges of an
  images-only file), dead / hot / saturated pixels, noise (night-sky background) vs time;
- :mod:`.dl1`: images surviving cleaning and cuts, intensity and width distributions (vs
  time and vs a reference run), image rates vs time, night-sky background per pixel from
  the charges of pixels outside the images;
- :mod:`.dl2`: reconstructed-event rate vs time, multiplicity, direction distribution in the
  field of view, gammaness distribution, h_max vs zenith;
- :mod:`.dl3`: event-rate stability, background rate vs a reference, GTI coverage.

Every metric is one number judged against reference ranges from the config
(:mod:`.status`): OK, WARNING or BAD.  Rate and distribution checks are significances
after the trials over time bins, so that clean runs do not flicker.
"""

from ..benchmark.report import write_metrics_json
from .status import STATUSES, Metric, MetricSet, status_in_ranges, worst

__all__ = ["STATUSES", "Metric", "MetricSet", "status_in_ranges", "worst", "run_time_axis", "metrics_document",
           "summary_line", "write_metrics_h5", "write_metrics_json", "write_html"]


def run_time_axis(h5, event_mjd):
    """``(mjd0, duration_s)`` of a run: the observation block's actual start and duration when set,
    else the first and last event."""
    import numpy as np

    path = "/configuration/observation/observation_block"
    mjd0 = duration = None
    if path in h5:
        row = h5.get_node(path).read()
        if len(row) and "actual_start_time" in row.dtype.names:
            start = float(np.asarray(row["actual_start_time"]).ravel()[0])
            dur = float(np.asarray(row["actual_duration"]).ravel()[0]) * 60.0
            if np.isfinite(start) and start > 40000 and dur > 0:
                mjd0, duration = start, dur
    event_mjd = np.asarray(event_mjd, float)
    if mjd0 is None:
        if len(event_mjd) == 0:
            return 0.0, 0.0
        mjd0 = float(event_mjd.min())
        duration = float((event_mjd.max() - mjd0) * 86400.0) + 1e-6
    elif len(event_mjd):
        duration = max(duration, float((event_mjd.max() - mjd0) * 86400.0) + 1e-6)
    return mjd0, duration


# --------------------------------------------------------------------------- outputs

METRICS_FORMAT = "iactpipe-quality-metrics-1"


def metrics_document(obs_id, metric_sets, inputs=()):
    """The ``metrics.json`` content: per metric value, unit, ranges, status; per level and run the worst status."""
    import datetime

    from .. import __version__

    metrics, levels = {}, {}
    for ms in metric_sets:
        for m in ms.metrics:
            metrics[m.name] = m.to_dict()
        levels[ms.level] = {"status": ms.status, "flagged": ms.flagged(), "notes": list(ms.notes)}
    return {
        "format": METRICS_FORMAT,
        "iactpipe_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "obs_id": obs_id,
        "inputs": [str(p) for p in inputs],
        "status": worst(v["status"] for v in levels.values()),
        "levels": levels,
        "metrics": metrics,
    }


def summary_line(document):
    """``run 1001: WARNING (DL0 OK, DL1 OK, DL2 WARNING [multiplicity_stability])``."""
    parts = []
    for level, info in document["levels"].items():
        flagged = f" [{', '.join(info['flagged'])}]" if info["flagged"] else ""
        parts.append(f"{level.upper()} {info['status']}{flagged}")
    run = document["obs_id"] if document["obs_id"] is not None else "?"
    return f"run {run}: {document['status']} ({', '.join(parts)})"


def write_metrics_h5(path, metric_sets):
    """One table per metric set table at ``/quality/<level>/<name>`` (ctapipe column attributes with units),
    plus ``/quality/metrics``: every metric with its value, ranges and status."""
    import warnings

    import numpy as np
    import tables

    filters = tables.Filters(complevel=5, complib="blosc:zstd", fletcher32=True)
    with tables.open_file(path, "w") as h5, warnings.catch_warnings():
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        for ms in metric_sets:
            for table in ms.tables:
                rows = _structured(table.columns)
                node = h5.create_table(f"/quality/{ms.level}", table.name, obj=rows, title=table.description,
                                       createparents=True, filters=filters)
                for i, name in enumerate(rows.dtype.names):
                    node.attrs[f"CTAFIELD_{i}_NAME"] = name
                    if table.units.get(name):
                        node.attrs[f"CTAFIELD_{i}_UNIT"] = table.units[name]
        all_metrics = [m for ms in metric_sets for m in ms.metrics]
        if all_metrics:
            def bound(b):
                return np.nan if b is None else float(b)

            rows = _structured({
                "name": np.array([m.name for m in all_metrics], dtype="S96"),
                "key": np.array([m.key for m in all_metrics], dtype="S48"),
                "value": np.array([m.value for m in all_metrics], float),
                "unit": np.array([m.unit for m in all_metrics], dtype="S16"),
                "ok_min": np.array([bound(m.ok[0]) for m in all_metrics]),
                "ok_max": np.array([bound(m.ok[1]) for m in all_metrics]),
                "warning_min": np.array([bound(m.warning[0]) for m in all_metrics]),
                "warning_max": np.array([bound(m.warning[1]) for m in all_metrics]),
                "status": np.array([m.status for m in all_metrics], dtype="S8"),
            })
            h5.create_table("/quality", "metrics", obj=rows, createparents=True, filters=filters,
                            title="Every metric: value, OK and WARNING ranges (NaN = open), status")


def _structured(columns):
    import numpy as np

    names = list(columns)
    arrays = []
    for name in names:
        values = np.asarray(columns[name])
        if values.dtype.kind == "U":
            values = values.astype("S")
        arrays.append(values)
    rows = np.zeros(len(arrays[0]) if arrays else 0,
                    dtype=[(n, a.dtype, a.shape[1:]) for n, a in zip(names, arrays, strict=True)])
    for name, values in zip(names, arrays, strict=True):
        rows[name] = values
    return rows


_CLASS = {"OK": "pass", "WARNING": "warn", "BAD": "fail"}


def write_html(path, metric_sets, document, title):
    """A self-contained page (plots embedded as data URIs), in the style of the benchmark report."""
    import base64
    import html

    try:  # the benchmark report's style sheet, where present
        from ..benchmark.report import _CSS as css
    except ImportError:  # pragma: no cover
        css = "body{font-family:sans-serif}td.pass{background:#c8f0c8}td.warn{background:#ffe9a8}" \
              "td.fail{background:#f7b9b9}"
    css += "span.pass{background:#c8f0c8}span.warn{background:#ffe9a8}span.fail{background:#f7b9b9}"
    esc = html.escape

    def fmt(v):
        if v is None:
            return "n/a"
        return f"{v:.4g}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"

    def rng(r):
        lo, hi = r
        if lo is None and hi is None:
            return "any"
        return f"[{fmt(lo) if lo is not None else '-inf'}, {fmt(hi) if hi is not None else '+inf'}]"

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
           f"<style>{css}</style></head><body>", f"<h1>{esc(title)}</h1>",
           f'<p class="summary" id="summary">{esc(summary_line(document))}</p>',
           f'<p class="note">iactpipe {esc(document["iactpipe_version"])}, {esc(document["created"])}</p>']
    if document["inputs"]:
        out.append('<p class="note">inputs: ' + ", ".join(esc(p) for p in document["inputs"]) + "</p>")
    for ms in metric_sets:
        out.append(f'<h2 id="{esc(ms.level)}">{esc(ms.title)}: '
                   f'<span class="{_CLASS[ms.status]}">{ms.status}</span></h2>')
        for note in ms.notes:
            out.append(f'<p class="note">{esc(note)}</p>')
        out.append('<table class="metrics"><thead><tr><th>metric</th><th>value</th><th>unit</th><th>status</th>'
                   "<th>OK range</th><th>WARNING range</th><th>detail</th><th>description</th></tr></thead><tbody>")
        for m in ms.metrics:
            d = m.to_dict()
            out.append(f"<tr><td>{esc(m.name)}</td><td>{fmt(d['value'])}</td><td>{esc(m.unit)}</td>"
                       f'<td class="{_CLASS[m.status]}">{m.status}</td><td>{rng(m.ok)}</td><td>{rng(m.warning)}</td>'
                       f"<td>{esc(m.detail)}</td><td>{esc(m.description)}</td></tr>")
        out.append("</tbody></table>")
        for name, png, caption in ms.plots:
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{esc(caption)}</figcaption></figure>")
    out.append("</body></html>")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("\n".join(out) + "\n")
