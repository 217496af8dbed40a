"""Each leg's dialog written through (`DialogStore`), so that a restart can end what a crash left.

Rules (RFC 3261 §12, §15.1.1; docs/design.md, "Storage")
- A dialog is saved once established (Call-ID, tags, URIs, CSeq numbers, remote target, route set, and the
  address its peer is reached at: behind NAT that is where a BYE must go, RFC 3581): all a BYE needs
  (§12.2.1.1). It is removed when it ends.
- Its CSeq numbers are written on every in-dialog request sent or received, and only when they moved
  (`write_cseq`: one comparison on the per-request path, no write when nothing changed).
- For an anchored call, the relay that holds its media is written with it (a restart deletes the relay call of a
  call it ends); on a cluster node (`sdps`), its SDPs too (the last we sent its party, the last that party sent
  us: docs/cluster.md, "Media in the cluster"), again whenever they changed, checked with each in-dialog request
  and each re-INVITE's answer (`write_cseq`). A single node never reads them back: it does not write them.
- A restored dialog's BYE skips `RESTORED_CSEQ_GAP` past the stored local CSeq: writes are queued (a crash loses
  the last ones) and the endpoint's own refreshes are written when answered; §12.2.1.1 only asks that the CSeq
  grow ("strictly monotonically increasing"), not that it grow by one, so a margin larger than any request burst
  a lost queue could hold is safe.
"""

from __future__ import annotations

from collections.abc import Callable

from callbridge.b2bua.legs import SipLeg
from callbridge.b2bua.ports import DialogRecord, DialogStore
from callbridge.sip.dialog import Dialog

__all__ = ["RESTORED_CSEQ_GAP", "DialogWriter"]

RESTORED_CSEQ_GAP = 100


class DialogWriter:
    """Owned by the switch; `Switch.write_cseq` is this writer's `write_cseq`."""

    def __init__(self, store: DialogStore, wall_clock: Callable[[], float]) -> None:
        self.store = store
        self.wall = wall_clock
        self.relay_of: Callable[[str | None], str | None] = lambda conn_id: None  # the switch's `anchor.relay_of`
        # write the SDPs too: a cluster node's calls may be adopted by another node, and a node that records calls
        # may finish a recording after a crash from them (bootstrap)
        self.sdps = False

    def established(self, leg: SipLeg, dialog: Dialog) -> None:
        leg.written_cseq = (dialog.local_seq, dialog.remote_seq)
        leg.written_sdp = (leg.sent_sdp, leg.remote_sdp) if self.sdps else (b"", b"")
        self.store.save_dialog(DialogRecord(
            leg_id=leg.leg_id, conn_id=leg.conn_id or "", call_id=dialog.call_id, local_tag=dialog.local_tag,
            remote_tag=dialog.remote_tag, local_uri=dialog.local_uri, remote_uri=dialog.remote_uri,
            local_cseq=dialog.local_seq, remote_cseq=dialog.remote_seq, remote_target=str(dialog.remote_target),
            route_set=tuple(dialog.route_set), peer_host=leg.peer_addr[0], peer_port=leg.peer_addr[1],
            transport=leg.transport, created_at=leg.created_at, updated_at=self.wall(),
            media_relay=self.relay_of(leg.conn_id), sent_sdp=leg.written_sdp[0], remote_sdp=leg.written_sdp[1]))

    def write_cseq(self, leg: SipLeg) -> None:
        """Write the dialog's sequence numbers through when they moved (a restored dialog's BYE needs them), and its
        SDPs when they changed since they were last written (a node adopting the call holds and resumes from them):
        called on every in-dialog request, and when an answer to a re-INVITE came or went."""
        dialog = leg.dialog
        if dialog is None or dialog.terminated:
            return
        seqs = (dialog.local_seq, dialog.remote_seq)
        if seqs != leg.written_cseq:
            leg.written_cseq = seqs
            self.store.update_cseq(leg.leg_id, seqs[0], seqs[1], self.wall())
        if not self.sdps:
            return
        sdps = (leg.sent_sdp, leg.remote_sdp)
        if sdps != leg.written_sdp:  # (the same objects when nothing changed: compared by identity first)
            leg.written_sdp = sdps
            self.store.update_sdp(leg.leg_id, sdps[0], sdps[1], self.wall())

    def ended(self, leg: SipLeg) -> None:
        self.store.remove_dialog(leg.leg_id)
