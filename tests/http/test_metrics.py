from __future__ import annotations

import pytest

from callbridge.http.metrics import Histogram, MetricsRegistry


def test_render_reads_callbacks_at_scrape_time() -> None:
    table = {"dialogs": 0}
    reg = MetricsRegistry()
    reg.gauge("callbridge_sip_dialogs", "Live SIP dialogs.", lambda: table["dialogs"])
    reg.counter("callbridge_policy_refused_total", "Datagrams refused by the destination policy.",
                lambda: {"not_allowed": 3, "not_ip_literal": 1}, label="reason")
    table["dialogs"] = 7
    assert reg.render() == (
        "# HELP callbridge_sip_dialogs Live SIP dialogs.\n"
        "# TYPE callbridge_sip_dialogs gauge\n"
        "callbridge_sip_dialogs 7\n"
        "# HELP callbridge_policy_refused_total Datagrams refused by the destination policy.\n"
        "# TYPE callbridge_policy_refused_total counter\n"
        'callbridge_policy_refused_total{reason="not_allowed"} 3\n'
        'callbridge_policy_refused_total{reason="not_ip_literal"} 1\n'
    )


def test_values_and_labels_are_escaped() -> None:
    reg = MetricsRegistry()
    reg.gauge("x", "a\nb", lambda: {'q"\\': 0.5, "nan": float("nan")})
    assert reg.render().splitlines() == [
        "# HELP x a\\nb", "# TYPE x gauge", 'x{key="nan"} NaN', 'x{key="q\\"\\\\"} 0.5']


@pytest.mark.parametrize("name", ["9x", "a-b", ""])
def test_bad_names_and_duplicates_are_refused(name: str) -> None:
    reg = MetricsRegistry()
    with pytest.raises(ValueError, match="invalid metric name"):
        reg.gauge(name, "h", lambda: 1)
    reg.gauge("ok", "h", lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.counter("ok", "h", lambda: 1)


def test_a_histogram_renders_cumulative_buckets_sum_and_count() -> None:
    reg = MetricsRegistry()
    hist = reg.histogram("t_seconds", "Latency.", Histogram("api", buckets=(0.1, 1.0)))
    for value in (0.05, 0.1, 0.5, 3.0):  # 0.1 falls in le="0.1": bounds are inclusive
        hist.observe("hold", value)
    hist.observe("dial", 0.2)
    assert reg.render() == (
        "# HELP t_seconds Latency.\n"
        "# TYPE t_seconds histogram\n"
        't_seconds_bucket{api="dial",le="0.1"} 0\n'
        't_seconds_bucket{api="dial",le="1.0"} 1\n'
        't_seconds_bucket{api="dial",le="+Inf"} 1\n'
        't_seconds_sum{api="dial"} 0.2\n'
        't_seconds_count{api="dial"} 1\n'
        't_seconds_bucket{api="hold",le="0.1"} 2\n'
        't_seconds_bucket{api="hold",le="1.0"} 3\n'
        't_seconds_bucket{api="hold",le="+Inf"} 4\n'
        't_seconds_sum{api="hold"} 3.65\n'
        't_seconds_count{api="hold"} 4\n'
    )
    assert (hist.count("hold"), hist.count("mute")) == (4, 0)


def test_several_labels_and_the_type_rules() -> None:
    reg = MetricsRegistry()
    reg.gauge("agents", "Agents.", lambda: {("0042", "ready"): 2, ("0042", "acw"): 0}, labels=("operation", "state"))
    assert reg.render().splitlines()[2:] == ['agents{operation="0042",state="acw"} 0',
                                              'agents{operation="0042",state="ready"} 2']
    with pytest.raises(ValueError, match="must end in _total"):
        reg.counter("requests", "h", lambda: 1)
    with pytest.raises(ValueError, match="invalid label name"):
        reg.gauge("g", "h", lambda: 1, label="le")
    with pytest.raises(ValueError, match="not both"):
        reg.gauge("g2", "h", lambda: 1, label="a", labels=("b",))
    with pytest.raises(ValueError, match="increasing"):
        Histogram("api", buckets=(1.0, 0.5))
    reg.gauge("bad", "h", lambda: {("only-one",): 1}, labels=("operation", "state"))
    with pytest.raises(ValueError, match="does not match the labels"):
        reg.render()
