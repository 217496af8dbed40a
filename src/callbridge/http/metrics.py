"""Prometheus text exposition (format 0.0.4) for `/metrics`, without a client library.

Gauges and counters are read at scrape time from callbacks registered by the parts that own the numbers (the SIP
endpoint's transaction and dialog tables, the transport's counters, the defences, the storage writer, the call
control's agents and queues), so nothing on a hot path pays for the exposition. A callback returns either one
number or a mapping of label values to numbers: with one label (`label=`) the keys are strings, with several
(`labels=`) tuples in the labels' order.

Histograms are the exception: a latency is observed where it is measured (`Histogram.observe`, a bisect and three
additions), and the exposition renders the cumulative buckets, `_sum` and `_count` of each label value.

Types follow the exposition format's rules: what goes up and down is a gauge; a counter only grows and its name
ends in `_total` (refused at registration otherwise).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Seconds: from a sub-millisecond API answer to a SIP transaction that waited out Timer B/F (32 s).
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                      32.0)

Number = float | int
# keys: a label value (str), or a tuple of label values in the order of `labels`
Sample = Number | Mapping[Any, Number]


class Histogram:
    """Observations per label value, in fixed buckets (upper bounds, seconds); `+Inf` is implied."""

    __slots__ = ("buckets", "label", "series")

    def __init__(self, label: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("histogram buckets must be increasing and not empty")
        self.label = label
        self.buckets = tuple(float(b) for b in buckets)
        # label value -> [count per bucket (not cumulative; the last one is +Inf), sum, count]
        self.series: dict[str, list[float]] = {}

    def observe(self, label_value: str, value: float) -> None:
        series = self.series.get(label_value)
        if series is None:
            series = self.series[label_value] = [0.0] * (len(self.buckets) + 3)
        series[bisect.bisect_left(self.buckets, value)] += 1
        series[-2] += value
        series[-1] += 1

    def count(self, label_value: str) -> int:
        series = self.series.get(label_value)
        return int(series[-1]) if series is not None else 0


@dataclass(frozen=True)
class _Metric:
    name: str
    kind: str  # "gauge" | "counter" | "histogram"
    help: str
    read: Callable[[], Sample] | None
    labels: tuple[str, ...]
    histogram: Histogram | None = None


class MetricsRegistry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def gauge(self, name: str, help: str, read: Callable[[], Sample], *, label: str | None = None,
              labels: Sequence[str] = ()) -> None:
        self._add(_Metric(name, "gauge", help, read, _label_names(label, labels)))

    def counter(self, name: str, help: str, read: Callable[[], Sample], *, label: str | None = None,
                labels: Sequence[str] = ()) -> None:
        self._add(_Metric(name, "counter", help, read, _label_names(label, labels)))

    def histogram(self, name: str, help: str, histogram: Histogram) -> Histogram:
        self._add(_Metric(name, "histogram", help, None, (histogram.label,), histogram))
        return histogram

    def _add(self, metric: _Metric) -> None:
        if not _NAME.fullmatch(metric.name):
            raise ValueError(f"invalid metric name {metric.name!r}")
        for label in metric.labels:
            if not _LABEL.fullmatch(label) or label == "le":
                raise ValueError(f"invalid label name {label!r} for {metric.name}")
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} registered twice")
        if metric.kind == "counter" and not metric.name.endswith("_total"):
            raise ValueError(f"counter {metric.name!r} must end in _total")
        self._metrics[metric.name] = metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            if metric.histogram is not None:
                _render_histogram(metric.name, metric.histogram, lines)
                continue
            assert metric.read is not None
            value = metric.read()
            if isinstance(value, Mapping):
                names = metric.labels or ("key",)
                for key in sorted(value):
                    values = key if isinstance(key, tuple) else (key,)
                    if len(values) != len(names):
                        raise ValueError(f"{metric.name}: {values!r} does not match the labels {names!r}")
                    lines.append(f"{metric.name}{{{_labels(names, values)}}} {_number(value[key])}")
            else:
                lines.append(f"{metric.name} {_number(value)}")
        return "\n".join(lines) + "\n"


def _label_names(label: str | None, labels: Sequence[str]) -> tuple[str, ...]:
    if label is not None and labels:
        raise ValueError("give label or labels, not both")
    return (label,) if label is not None else tuple(labels)


def _labels(names: Sequence[str], values: Sequence[object]) -> str:
    return ",".join(f'{name}="{_escape_label(str(value))}"' for name, value in zip(names, values, strict=True))


def _render_histogram(name: str, histogram: Histogram, lines: list[str]) -> None:
    label = histogram.label
    for value in sorted(histogram.series):
        series = histogram.series[value]
        escaped = _escape_label(value)
        cumulative = 0.0
        for bound, count in zip((*histogram.buckets, math.inf), series, strict=False):
            cumulative += count
            le = "+Inf" if bound == math.inf else _number(bound)
            lines.append(f'{name}_bucket{{{label}="{escaped}",le="{le}"}} {_number(int(cumulative))}')
        lines.append(f'{name}_sum{{{label}="{escaped}"}} {_number(series[-2])}')
        lines.append(f'{name}_count{{{label}="{escaped}"}} {_number(int(series[-1]))}')


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
