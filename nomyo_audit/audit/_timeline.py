"""The report's chart: requests per hour or per day as a stacked-bar inline SVG. Pure.

No JavaScript, no network: the HTML report embeds the SVG as it is. Every label that comes
from the report is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._report_record import as_mapping

__all__ = ["timeline_svg"]

_COLOURS = (("passed", "#2e7d32"), ("warned", "#f9a825"), ("failed", "#c62828"), ("denied", "#6a1b9a"))


def timeline_svg(report: Mapping[str, Any], width: int = 640, height: int = 160) -> str:
    """Stacked bars per hour (a period of a day or two) or per day, with axes and a legend."""
    hourly = isinstance(report.get("by_hour"), Mapping)
    if hourly:
        buckets = _hours(as_mapping(report.get("by_hour")))
    else:
        buckets = list(as_mapping(report.get("by_day")).items())
    buckets = buckets[-72:]
    unit = "hour" if hourly else "day"
    if not buckets:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'role="img" aria-label="no records"><text x="10" y="20" font-size="12">no records</text></svg>'
        )
    left, top, plot = 40, 10, height - 10
    peak = max(sum(as_mapping(c).values()) for _, c in buckets) or 1
    bar = max(2, min(40, (width - left - 10) // len(buckets)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" role="img" '
        f'aria-label="requests per {unit}">',
        f"<title>requests per {unit}</title>",
        f'<line x1="{left - 2}" y1="{top}" x2="{left - 2}" y2="{top + plot}" stroke="#888"/>',
        f'<line x1="{left - 2}" y1="{top + plot}" x2="{width}" y2="{top + plot}" stroke="#888"/>',
    ]
    for tick in sorted({0, (peak + 1) // 2, peak}):
        y = top + plot - round(tick / peak * plot)
        parts.append(f'<text x="{left - 6}" y="{y + 4}" font-size="10" text-anchor="end">{tick}</text>')
    for n, (bucket, counts) in enumerate(buckets):
        counts = as_mapping(counts)
        x, y = left + n * bar, top + plot
        for status, colour in _COLOURS:
            h = round(counts.get(status, 0) / peak * plot)
            if h:
                y -= h
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{bar - 1}" height="{h}" fill="{colour}">'
                    f"<title>{_escape(bucket)}: {counts.get(status, 0)} {status}</title></rect>"
                )
        label = _axis_label(bucket, hourly, n, len(buckets))
        if label:
            parts.append(f'<text x="{x}" y="{top + plot + 14}" font-size="10">{_escape(label)}</text>')
    legend_y = top + plot + 34
    for n, (status, colour) in enumerate(_COLOURS):
        x = left + n * 90
        parts.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{legend_y}" font-size="11">{status}</text>')
    first, last = buckets[0][0][:10], buckets[-1][0][:10]
    span = first if first == last else f"{first} to {last}"
    parts.append(
        f'<text x="{left}" y="{legend_y + 18}" font-size="10">requests per {unit} (UTC), '
        f"{_escape(span)}</text></svg>"
    )
    return "".join(parts)


def _hours(by_hour: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every hour of the days that have records, so one day reads 00:00 to 23:00."""
    days = sorted({hour[:10] for hour in by_hour if _HOUR.match(hour)})
    return [(f"{day}T{h:02d}", by_hour.get(f"{day}T{h:02d}", {})) for day in days for h in range(24)]


_HOUR = re.compile(r"^\d{4}-\d\d-\d\dT\d\d$")


def _axis_label(bucket: str, hourly: bool, position: int, count: int) -> str:
    """Hours on the 6-hour marks; days at the ends (and a few between for long periods)."""
    if hourly:
        hour = bucket[11:13]
        return f"{hour}:00" if hour in ("00", "06", "12", "18") else ""
    step = max(1, count // 4)
    return bucket[5:10] if position % step == 0 or position == count - 1 else ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
