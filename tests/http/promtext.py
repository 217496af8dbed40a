"""A strict reader of the Prometheus text exposition format 0.0.4, for the tests of `/metrics`: every line must be
a HELP, a TYPE or a sample of the family its TYPE announced; a sample that fits no family, a family without TYPE,
or a malformed line fails the parse."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? '
                     r'(-?[0-9.e+-]+|NaN|[+-]Inf)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("",), "gauge": ("",)}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    type: str
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, **labels: str) -> float:
        """The one sample (without suffix) whose labels are exactly `labels`."""
        found = [v for n, ls, v in self.samples if n == self.name and ls == labels]
        assert len(found) == 1, f"{self.name}{labels}: {len(found)} samples"
        return found[0]

    def by(self, *names: str) -> dict[tuple[str, ...], float]:
        return {tuple(ls[n] for n in names): v for n, ls, v in self.samples if n == self.name}


def parse(text: str) -> dict[str, Family]:
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            helps[name] = help_text
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in _SUFFIXES, line
            assert name not in families, f"{name} announced twice"
            assert name in helps, f"{name}: TYPE without HELP"
            families[name] = Family(name, kind, helps[name])
            continue
        match = _SAMPLE.fullmatch(line)
        assert match is not None, f"not a sample line: {line!r}"
        sample, labels_text, value_text = match.groups()
        labels = dict(_LABEL.findall(labels_text or ""))
        value = float(value_text.replace("Inf", "inf"))
        owner = next((f for f in families.values() for suffix in _SUFFIXES[f.type] if sample == f.name + suffix),
                     None)
        assert owner is not None, f"{sample}: no TYPE announced it"
        owner.samples.append((sample, labels, value))
    return families


def histogram(family: Family, label: str) -> dict[str, tuple[list[tuple[float, float]], float, float]]:
    """label value -> (buckets [(le, cumulative count)], sum, count), checked: `le` increasing to +Inf, counts
    cumulative (never decreasing), the +Inf bucket equal to `_count`."""
    assert family.type == "histogram"
    out: dict[str, tuple[list[tuple[float, float]], float, float]] = {}
    values = {ls[label] for _, ls, _ in family.samples}
    for value in values:
        buckets = [(float(ls["le"].replace("Inf", "inf")), v) for n, ls, v in family.samples
                   if n == family.name + "_bucket" and ls.get(label) == value]
        [total] = [v for n, ls, v in family.samples if n == family.name + "_sum" and ls == {label: value}]
        [count] = [v for n, ls, v in family.samples if n == family.name + "_count" and ls == {label: value}]
        bounds = [le for le, _ in buckets]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds) and math.isinf(bounds[-1])
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{family.name}{{{label}={value}}}: buckets not cumulative {counts}"
        assert counts[-1] == count
        out[value] = (buckets, total, count)
    return out
