"""The node's SIP-side numbers on `/metrics`: the endpoint's tables and transaction latencies, the transport, the
defences, the registrar and the trunks (`bootstrap` registers them; the HTTP layer adds its own in `create_app`).

Types follow what each number does: live things (dialogs, transactions, legs, registrations, TCP connections,
addresses banned now) are gauges; what only grows is a counter ending in `_total`. SIP transaction latencies are
histograms per method, one for client and one for server transactions, observed by the endpoint at each
transaction's first final response with the `now` it was driven with (`Endpoint.on_transaction_completed`): from
the request sent to the final response received (client), from the request received to the final response sent
(server). A transaction that times out has no final response and is not observed (`callbridge_sip_endpoint_total`
and the transport count those). Methods outside `SIP_METHODS` are observed as `other`, so a scanner inventing
methods cannot grow the label's values.
"""

from __future__ import annotations

from callbridge.b2bua.switch import Switch
from callbridge.http.metrics import Histogram, MetricsRegistry
from callbridge.sip.endpoint import Endpoint
from callbridge.transport import Runtime

SIP_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE", "REFER",
                         "NOTIFY", "SUBSCRIBE", "MESSAGE", "PRACK", "PUBLISH"})
_TRANSPORT_GAUGES = ("tcp_open_connections",)  # in Runtime.metrics() beside its counters


def node_metrics(endpoint: Endpoint, runtime: Runtime, switch: Switch) -> MetricsRegistry:
    registry = MetricsRegistry()
    registry.gauge("callbridge_sip_dialogs", "Live SIP dialogs in the endpoint's table.",
                   lambda: endpoint.dialog_count)
    registry.gauge("callbridge_sip_transactions", "Live SIP transactions in the endpoint's table.",
                   lambda: endpoint.transaction_count)
    registry.gauge("callbridge_b2bua_legs", "Legs the B2BUA holds (ringing or up).", lambda: len(switch.legs))
    registry.gauge("callbridge_registrations", "Live registered contacts.",
                   lambda: len(switch.registrar.location))
    registry.gauge("callbridge_sip_tcp_connections", "Open SIP TCP connections.",
                   lambda: runtime.metrics()["tcp_open_connections"])
    registry.counter("callbridge_transport_total", "Transport counters and destination-policy refusals.",
                     lambda: {k: v for k, v in runtime.metrics().items() if k not in _TRANSPORT_GAUGES},
                     label="counter")
    registry.counter("callbridge_sip_endpoint_total", "SIP endpoint counters (parse errors, stray messages).",
                     lambda: dict(endpoint.stats), label="counter")

    def defence_counters() -> dict[str, int]:
        numbers = switch.defence.metrics(switch.now())
        return {"dropped_scanner": numbers["dropped_scanner"], "dropped_banned": numbers["dropped_banned"],
                "bans": numbers["bans_total"]}

    registry.counter("callbridge_defence_total", "Flood defence: scanner and banned drops, bans made.",
                     defence_counters, label="counter")
    registry.gauge("callbridge_defence_banned", "Source addresses banned now.",
                   lambda: switch.defence.metrics(switch.now())["banned_now"])
    registry.gauge("callbridge_trunk_registered", "1 when the trunk is registered to its provider, else 0.",
                   switch.trunk_registrations.registered, label="trunk")
    registry.counter("callbridge_trunk_auth_total", "Trunk registrations and digest answers to providers.",
                     lambda: dict(switch.trunk_registrations.stats), label="outcome")
    registry.counter("callbridge_registrar_total", "Registrar outcomes.", lambda: dict(switch.registrar.stats),
                     label="outcome")
    latency = {
        "client": registry.histogram("callbridge_sip_client_transaction_seconds",
                                     "SIP client transactions: request sent to final response, by method",
                                     Histogram("method")),
        "server": registry.histogram("callbridge_sip_server_transaction_seconds",
                                     "SIP server transactions: request received to final response sent, by method",
                                     Histogram("method")),
    }

    def completed(side: str, method: str, seconds: float) -> None:
        latency[side].observe(method if method in SIP_METHODS else "other", seconds)

    endpoint.on_transaction_completed = completed
    return registry
