from __future__ import annotations

import pytest

from callbridge.http.metrics import MetricsRegistry


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
