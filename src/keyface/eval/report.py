"""RD plots (PNG, matplotlib Agg) and ``report.md`` of a ``keyface bench`` run.

Everything here works from the ``points.json`` document alone, so a report can be redrawn
from a saved run: ``write_report(json.load(open("points.json")), Path("out"))``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.4f}"


def _kbps(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _metric_label(data: dict[str, Any], metric: str) -> str:
    spec = data["protocol"]["metrics"].get(metric, {})
    unit = f" ({spec['unit']})" if spec.get("unit") else ""
    better = "lower" if spec.get("direction") == "lower" else "higher"
    return f"{metric}{unit}, {better} is better"


def _codecs(data: dict[str, Any]) -> list[str]:
    return list(data["protocol"]["codecs"])


def _tick(value: float, _pos: object = None) -> str:
    return f"{value:g}"


def _minor_tick(value: float, _pos: object = None) -> str:
    """Label the 2 and 5 minor ticks of a log axis (10, 20, 50, 100, ...)."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def plot_rd(data: dict[str, Any], out: Path) -> dict[str, Path]:
    """One PNG per metric: the clip-averaged RD curve of every codec, log kbit/s axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    out.mkdir(parents=True, exist_ok=True)
    averages = data["averages"]
    n_clips = len(data["protocol"]["clips"])
    frames = data["protocol"]["frames"]
    paths: dict[str, Path] = {}
    for metric in data["protocol"]["metrics"]:
        fig = Figure(figsize=(7.0, 4.8), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        drawn = False
        for i, codec in enumerate(_codecs(data)):
            rows = [
                r for r in averages if r["codec"] == codec and r["metrics"].get(metric) is not None
            ]
            rows.sort(key=lambda r: r["kbps"])
            if not rows:
                continue
            x = [r["kbps"] for r in rows]
            y = [r["metrics"][metric] for r in rows]
            main = codec.startswith("keyface")
            ax.plot(
                x,
                y,
                marker=MARKERS[i % len(MARKERS)],
                linewidth=2.4 if main else 1.4,
                markersize=6 if main else 4.5,
                label=codec,
                zorder=3 if main else 2,
            )
            drawn = True
            if main:
                for r in rows:
                    ax.annotate(
                        f"u={r['param']:g}",
                        (r["kbps"], r["metrics"][metric]),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=7,
                        color="0.3",
                    )
        if not drawn:
            continue
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_tick))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_tick))
        ax.set_xlabel("bitrate (kbit/s, log scale)")
        ax.set_ylabel(_metric_label(data, metric))
        ax.set_title(f"{metric}: mean over {n_clips} clip(s), first {frames} frames")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"rd_{metric}.png"
        fig.savefig(path)
        paths[metric] = path
    return paths


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _bd_cell(entry: dict[str, Any] | None, what: str, notes: list[str], label: str) -> str:
    if entry is None:
        return "—"
    res = entry[what]
    if res["value"] is None:
        notes.append(f"{label}: {res.get('reason') or 'not computed'}")
        return f"n/a [{len(notes)}]"
    if what == "bd_rate":
        text = f"{res['value']:+.1f} %"
    else:
        text = f"{res['value']:+.4g}"
    if entry.get("scope") == "clip_mean":
        text += f" ({res.get('clips', 0)})"
    elif res.get("overlap") is not None and res["overlap"] < 0.5:
        text += f" (overlap {100 * res['overlap']:.0f} %)"
    return text


def _bd_tables(data: dict[str, Any]) -> list[str]:
    bd = data["bd"]
    if not bd:
        return ["No BD values (keyface or anchors not run)."]
    anchors = [c for c in _codecs(data) if not c.startswith("keyface")]
    metrics = list(data["protocol"]["metrics"])
    test = bd[0]["test"]
    lines: list[str] = []
    notes: list[str] = []
    titles = {
        ("bd_rate", "average"): "BD-rate on the clip-averaged curves (negative: keyface needs "
        "fewer bits for the same quality)",
        ("bd_quality", "average"): "BD-quality on the clip-averaged curves (metric units; "
        "positive: keyface is better at the same rate)",
        ("bd_rate", "clip_mean"): "BD-rate, mean of the per-clip values (in parentheses: clips "
        "with a value)",
    }
    for (what, scope), title in titles.items():
        lines += [f"### {title}", ""]
        rows = []
        for m in metrics:
            row = [m]
            for a in anchors:
                entry = next(
                    (
                        e
                        for e in bd
                        if e["anchor"] == a and e["metric"] == m and e["scope"] == scope
                    ),
                    None,
                )
                row.append(_bd_cell(entry, what, notes, f"{m} vs {a} ({what}, {scope})"))
            rows.append(row)
        lines += _table(["metric", *[f"{test} vs {a}" for a in anchors]], rows)
        lines.append("")
    if notes:
        lines += ["Why some values are missing:", ""]
        lines += [f"{i}. {n}" for i, n in enumerate(notes, 1)]
        lines.append("")
    return lines


def _targets(data: dict[str, Any]) -> list[str]:
    targets = data.get("targets") or []
    if not targets:
        return ["No quality targets (their metric was not computed)."]
    metric_values = [(t["metric"], t["target"]) for t in targets]
    cols = list(dict.fromkeys(metric_values))
    rows = []
    for codec in _codecs(data):
        row = [codec]
        for metric, value in cols:
            t = next(
                (
                    x
                    for x in targets
                    if x["codec"] == codec and x["metric"] == metric and x["target"] == value
                ),
                None,
            )
            if t is None:
                row.append("—")
            elif t["status"] == "not_reached":
                best = t.get("best")
                row.append("not reached" + (f" (best {best:.3g})" if best is not None else ""))
            elif t["status"] == "at_lowest":
                row.append(f"≤ {_kbps(t['kbps'])}")
            else:
                row.append(_kbps(t["kbps"]))
        rows.append(row)
    header = ["codec", *[f"kbit/s for {m} ≤ {v:g}" for m, v in cols]]
    return [
        *_table(header, rows),
        "",
        "Interpolated linearly in log-rate between the two averaged points around the target "
        "(on the curve's Pareto front); “≤ r”: already reached at the lowest rate measured.",
    ]


def _averages(data: dict[str, Any]) -> list[str]:
    metrics = list(data["protocol"]["metrics"])
    rows = []
    for r in data["averages"]:
        rows.append(
            [
                r["codec"],
                f"{r['param_name']}={r['param']:g}",
                _kbps(r["kbps"]),
                *[_fmt(r["metrics"].get(m)) for m in metrics],
                str(r["clips"]),
            ]
        )
    return _table(["codec", "param", "kbit/s", *metrics, "clips"], rows)


def _sec(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _timing(data: dict[str, Any]) -> list[str]:
    t = data["timing"]
    rows = [
        [
            codec,
            str(v["points"]),
            _sec(v["encode_s"]),
            _sec(v["decode_s"]),
            _sec(v["metrics_s"]),
            _sec(v["total_s"]),
            _sec(v["total_s_per_frame"]),
        ]
        for codec, v in t["per_codec"].items()
    ]
    lines = _table(
        ["codec", "points", "encode s", "decode s", "metrics s", "total s / point", "s / frame"],
        rows,
    )
    lines += [""]
    mrows = [[m, _sec(v["s_per_frame"]), _sec(v["total_s"])] for m, v in t["per_metric"].items()]
    lines += _table(["metric", "s per frame pair", "total s"], mrows)
    prep = [v for v in t.get("prepare", {}).values() if v]
    if prep:
        crop = sum(v.get("crop", 0.0) for v in prep) / len(prep)
        ana = sum(v.get("analyze", 0.0) for v in prep) / len(prep)
        lines += ["", f"Per clip, once: crop {crop:.1f} s, face-mesh analysis {ana:.1f} s (mean)."]
    lines += [
        "",
        "Times are wall-clock seconds inside one worker (points run in parallel, "
        f"{data['run']['jobs']} at a time); cached points report the time they took when "
        "computed.",
    ]
    return lines


def render_markdown(data: dict[str, Any], plots: dict[str, Path]) -> str:
    p = data["protocol"]
    run = data["run"]
    lines = ["# keyface rate-distortion benchmark", ""]
    lines += [
        f"Run {run['started']}: wall time {run['wall_seconds']:.1f} s; {run['computed']} points "
        f"computed, {run['cached']} from the cache, {run['failed']} failed.",
        "",
        "Command (every option explicit):",
        "",
        "```",
        p["command"] or "(not recorded)",
        "```",
        "",
        "## Protocol",
        "",
        f"- first {p['frames']} frames of each clip (fewer if the clip is shorter), "
        f"{p['size']}x{p['size']} face crop (`keyface.pipeline.crop_video`) stored as raw "
        "4:2:0 y4m: every codec's input and the metrics' reference; native frame rate",
        "- rate = real stream bytes x 8 / clip duration",
    ]
    inverted = [f"{m}: {v['inversion']}" for m, v in p["metrics"].items() if v["inversion"] != "x"]
    line = (
        f"- metrics: {', '.join(p['metrics'])} (device {p['device']}); BD method {p['bd_method']}"
    )
    if inverted:
        line += "; lower-is-better metrics inverted for BD as " + ", ".join(inverted)
    sparse = [f"{m} every {v['every']}th" for m, v in p["metrics"].items() if v.get("every", 1) > 1]
    if sparse:
        line += "; measured on frames 0, N, 2N, ... only: " + ", ".join(sparse)
    lines.append(line)
    for codec, c in p["codecs"].items():
        extra = f"generator {c['generator']}" if "generator" in c else f"preset {c['preset']}"
        params = ", ".join(f"{v:g}" for v in c["params"])
        lines.append(f"- {codec}: {c['param_name']} = {params} ({extra})")
    lines += ["", f"{len(p['clips'])} clip(s):", ""]
    lines += _table(
        ["clip", "person", "frames", "fps"],
        [[c["clip"], c["person"], str(c["frames"]), str(c["fps"])] for c in p["clips"]],
    )
    short = [c["clip"] for c in p["clips"] if c["frames"] is not None and c["frames"] < p["frames"]]
    if short:
        lines += ["", f"Shorter than {p['frames']} frames (used whole): {', '.join(short)}."]
    lines += ["", "## RD curves (mean over clips)", ""]
    for metric, path in plots.items():
        lines += [f"![{metric}]({path.name})", ""]
    lines += ["## Rate needed for quality targets", "", *_targets(data), ""]
    lines += ["## Bjøntegaard deltas", "", *_bd_tables(data)]
    lines += ["## Averaged RD points", "", *_averages(data), ""]
    lines += ["## Timing", "", *_timing(data), ""]
    if data.get("failures"):
        lines += ["## Failures", ""]
        for f in data["failures"]:
            what = f"{f.get('codec', '')} {f.get('param', '')}".strip()
            lines.append(f"- {f['clip']} {what} ({f['stage']}): {f['error']}")
        lines.append("")
    lines += ["## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in p["versions"].items()]
    lines.append("")
    return "\n".join(lines)


def write_report(data: dict[str, Any], out: Path) -> Path:
    """Write ``rd_<metric>.png`` and ``report.md`` into ``out``; return the report's path."""
    out = Path(out)
    plots = plot_rd(data, out)
    path = out / "report.md"
    path.write_text(render_markdown(data, plots))
    return path
