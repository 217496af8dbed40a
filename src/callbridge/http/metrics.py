"""Prometheus text exposition (format 0.0.4) for `/metrics`, without a client library.

Metrics are read at scrape time from callbacks registered by the parts that own the numbers (the SIP endpoint's
transaction and dialog tables, the transport's counters, the defences, the storage writer), so nothing on a hot
path pays for the exposition. A callback returns either one number or a mapping of label values to numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

Sample = float | int | Mapping[str, float | int]


@dataclass(frozen=True)
class _Metric:
    name: str
    kind: str  # "gauge" | "counter"
    help: str
    read: Callable[[], Sample]
    label: str | None


class MetricsRegistry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def gauge(self, name: str, help: str, read: Callable[[], Sample], *, label: str | None = None) -> None:
        self._add(_Metric(name, "gauge", help, read, label))

    def counter(self, name: str, help: str, read: Callable[[], Sample], *, label: str | None = None) -> None:
        self._add(_Metric(name, "counter", help, read, label))

    def _add(self, metric: _Metric) -> None:
        if not _NAME.fullmatch(metric.name):
            raise ValueError(f"invalid metric name {metric.name!r}")
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} registered twice")
        self._metrics[metric.name] = metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            value = metric.read()
            if isinstance(value, Mapping):
                label = metric.label or "key"
                for key in sorted(value):
                    lines.append(f'{metric.name}{{{label}="{_escape_label(str(key))}"}} {_number(value[key])}')
            else:
                lines.append(f"{metric.name} {_number(value)}")
        return "\n".join(lines) + "\n"


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
