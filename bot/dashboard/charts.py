"""SVG charts drawn on the server: no script, no CDN, inside the dashboard's strict CSP.

Every chart is a ``<figure class="chart" id="chart-NAME">`` holding one ``<svg>`` whose marks
carry classes (``bar``, ``line``, ``point``) and a ``<title>`` with the exact number, so a
person hovering and a test reading the DOM see the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup

from bot.dashboard.stats import Summary

W, H = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28
COLORS = {"succeeded": "#2da44e", "failed": "#cf222e", "cancelled": "#8c959f",
          "active": "#0969da", "cost": "#8250df", "p50": "#0969da", "p95": "#bf8700",
          "rate": "#2da44e", "queue": "#bc4c00"}
Fmt = Callable[[float], str]


def _money(v: float) -> str:
    return f"${v:.2f}" if v >= 1 else f"${v:.4f}"


def _count(v: float) -> str:
    return f"{v:g}"


def _pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def _secs(v: float) -> str:
    return f"{v:.1f}s" if v < 60 else f"{int(v // 60)}m {v % 60:02.0f}s"


def _figure(name: str, title: str, body: str, legend: Sequence[str] = ()) -> Markup:
    keys = "".join(f'<span class="key"><svg width="10" height="10" aria-hidden="true">'
                   f'<rect width="10" height="10" fill="{COLORS[k]}"/></svg> {escape(k)}</span>'
                   for k in legend)
    return Markup(f'<figure class="chart" id="chart-{name}"><figcaption>{escape(title)}'
                  f'{" " + keys if keys else ""}</figcaption>{body}</figure>')


def _svg(label: str, inner: str) -> str:
    return (f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{inner}</svg>')


def _axis(top: float, fmt: Fmt, labels: Sequence[str]) -> str:
    """The y scale (0, half, top) and a few x labels."""
    plot_h = H - TOP - BOTTOM
    out = []
    for share in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - share)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#d0d7de" stroke-width="1"/>'
                   f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
                   f'fill="#57606a">{escape(fmt(top * share))}</text>')
    if labels:
        every = max(1, len(labels) // 6)
        slot = (W - LEFT - RIGHT) / len(labels)
        for n in sorted(range(len(labels) - 1, -1, -every)):  # the newest always named
            x, anchor = LEFT + slot * (n + 0.5), "middle"
            if x + 3 * len(labels[n]) > W - RIGHT:  # would run off the right edge
                x, anchor = W - RIGHT, "end"
            out.append(f'<text x="{x:.1f}" y="{H - 8}" text-anchor="{anchor}" font-size="10" '
                       f'fill="#57606a">{escape(labels[n])}</text>')
    return "".join(out)


def _empty(name: str, title: str) -> Markup:
    return _figure(name, title, '<p class="empty">No jobs in this window.</p>')


def stacked_bars(name: str, title: str, labels: Sequence[str],
                 series: dict[str, list[float]], fmt: Fmt = _count) -> Markup:
    totals = [sum(v[n] for v in series.values()) for n in range(len(labels))]
    if not any(totals):
        return _empty(name, title)
    top = max(totals)
    plot_h, slot = H - TOP - BOTTOM, (W - LEFT - RIGHT) / len(labels)
    marks = []
    for n, label in enumerate(labels):
        y = float(TOP + plot_h)
        for key, values in series.items():
            if not values[n]:
                continue
            h = plot_h * values[n] / top
            y -= h
            marks.append(f'<rect class="bar bar-{key}" x="{LEFT + slot * n + 1:.1f}" '
                         f'y="{y:.1f}" width="{max(1.0, slot - 2):.1f}" height="{h:.1f}" '
                         f'fill="{COLORS[key]}"><title>{escape(label)}: {escape(fmt(values[n]))} '
                         f'{escape(key)}</title></rect>')
    short = [lb[5:] for lb in labels]
    return _figure(name, title, _svg(title, _axis(top, fmt, short) + "".join(marks)),
                   [k for k in series if len(series) > 1])


def hbars(name: str, title: str, rows: Sequence[tuple[str, list[float]]], keys: Sequence[str],
          fmt: Fmt) -> Markup:
    """Horizontal bars, one group per row (a repository, a stage), one bar per key."""
    if not rows or not any(v for _, values in rows for v in values):
        return _empty(name, title)
    top = max(v for _, values in rows for v in values) or 1.0
    label_w, bar_h = 150, 12
    height = TOP + len(rows) * (bar_h * len(keys) + 8) + 8
    marks = []
    for n, (label, values) in enumerate(rows):
        y = TOP + n * (bar_h * len(keys) + 8)
        marks.append(f'<text x="{label_w - 6}" y="{y + bar_h * len(keys) / 2 + 4:.1f}" '
                     f'text-anchor="end" font-size="11" fill="#1f2328">'
                     f'{escape(label if len(label) <= 24 else label[:23] + "…")}</text>')
        for k, (key, value) in enumerate(zip(keys, values, strict=True)):
            w = (W - label_w - 70) * value / top
            marks.append(f'<rect class="bar bar-{key}" x="{label_w}" y="{y + k * bar_h:.1f}" '
                         f'width="{max(1.0, w):.1f}" height="{bar_h - 2}" fill="{COLORS[key]}">'
                         f'<title>{escape(label)} {escape(key)}: {escape(fmt(value))}</title>'
                         f'</rect><text x="{label_w + max(1.0, w) + 4:.1f}" '
                         f'y="{y + k * bar_h + bar_h - 3:.1f}" font-size="10" fill="#57606a">'
                         f'{escape(fmt(value))}</text>')
    body = (f'<svg viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
            f'{"".join(marks)}</svg>')
    return _figure(name, title, body, keys if len(keys) > 1 else ())


def line(name: str, title: str, labels: Sequence[str], values: Sequence[float | None],
         key: str, fmt: Fmt, top: float | None = None) -> Markup:
    known = [v for v in values if v is not None]
    if not known:
        return _empty(name, title)
    top = top or max(known) or 1.0
    plot_h, slot = H - TOP - BOTTOM, (W - LEFT - RIGHT) / len(values)
    points = [(LEFT + slot * (n + 0.5), TOP + plot_h * (1 - v / top), labels[n], v)
              for n, v in enumerate(values) if v is not None]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
    dots = "".join(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
                   f'fill="{COLORS[key]}"><title>{escape(lb)}: {escape(fmt(v))}</title></circle>'
                   for x, y, lb, v in points) if len(points) <= 60 else ""
    marks = (f'<polyline class="line line-{key}" points="{path}" fill="none" '
             f'stroke="{COLORS[key]}" stroke-width="2"/>{dots}')
    return _figure(name, title, _svg(title, _axis(top, fmt, labels) + marks))


def all_charts(s: Summary) -> list[Markup]:
    """The dashboard's charts, in the order the page shows them."""
    days = s.days
    queue_labels = [time.strftime("%m-%d", time.gmtime(t)) for t, _ in s.queue]
    return [
        stacked_bars("jobs-per-day", "Jobs per day, by outcome", days,
                     {k: [float(v) for v in vs] for k, vs in s.outcomes.items()}),
        line("success-rate", "Success rate per day (succeeded / ended)", [d[5:] for d in days],
             s.success_per_day, "rate", _pct, top=1.0),
        stacked_bars("cost-per-day", "Cost per day", days, {"cost": s.cost_per_day}, _money),
        hbars("cost-per-repo", "Cost per repository", [(r, [c]) for r, c in s.cost_per_repo],
              ["cost"], _money),
        hbars("stage-times", "Time per stage (p50, p95)",
              [(f"{name} ({n})", [p50, p95]) for name, p50, p95, n in s.stages],
              ["p50", "p95"], _secs),
        line("queue", "Queue length over time", queue_labels,
             [float(q) for _, q in s.queue], "queue", _count,
             top=max(1.0, max((q for _, q in s.queue), default=0))),
    ]
