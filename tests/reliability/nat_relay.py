"""A NAT-like UDP relay for loopback media tests: what a phone behind a port-rewriting NAT looks like from outside.

    nat = await NatRelay(destination=bob_rtp, public_host="127.0.0.5").start()
    alice_call.rtp.next_hop = nat.inside          # alice's packets reach bob through the NAT
    nat.public_address(alice_rtp)                  # where bob sees them come from (not what alice's SDP says)

It is `lossy_relay.LossyRelay` (reused as is: same sockets, same counts, same seeded loss) in the roles of a
symmetric NAT (RFC 4787 §4.1: address-and-port-dependent mapping and filtering):
- the *inside* address (the relay's front socket) is where the inside host sends; each inside source gets its own
  public socket on ``public_host`` with a new ephemeral port: the source address and port are rewritten;
- the public socket is connected to the one destination, so only that destination's packets come back in (a
  packet from anyone else is filtered by the kernel), and they reach the inside host from the inside address it
  sent to (the reply path a NAT gives);
- an outside peer reaches the inside host only by answering to where the packets came from (symmetric RTP, RFC
  4961; rtpengine's comedia), never at the address the inside host's SDP names.

Loopback only and bounded in time, as the relay it is built on.
"""

from __future__ import annotations

from lossy_relay import Address, LossyRelay

__all__ = ["NatRelay"]


class NatRelay(LossyRelay):
    """A symmetric NAT in front of inside hosts, towards one ``destination`` (see the module docstring)."""

    def __init__(self, destination: Address, *, inside_host: str = "127.0.0.1", public_host: str = "127.0.0.5",
                 loss_to_destination: float = 0.0, loss_to_inside: float = 0.0, seed: int = 0,
                 duration: float = 60.0) -> None:
        super().__init__((inside_host, 0), destination, loss_to_server=loss_to_destination,
                         loss_to_client=loss_to_inside, seed=seed, duration=duration, back_host=public_host)

    async def start(self) -> NatRelay:
        await super().start()
        return self

    @property
    def inside(self) -> Address:
        """Where inside hosts send to reach ``destination``."""
        return self.address

    def public_address(self, inside_source: Address) -> Address | None:
        """The rewritten source the destination sees for ``inside_source`` (None before its first packet)."""
        return self.back_address(inside_source)
