"""The media plane: rtpengine relays driven over their ng control protocol.

- `bencode`: the ng wire encoding (strict).
- `audio`: WAV files loaded and converted once for the relay, built-in hold music and ringback; `g711`, `rtp_packet`,
  `pcap`, `recording`: a call's recorded pcap segments joined into one two-channel WAV (pure, run off the loop).
- `ng`: the sans-I/O ng client (cookies, retransmissions, replies), `relays`: a set of relays (health, features,
  a call's relay), `shell`: the asyncio socket that drives them, `rtpengine`: the `Media` port
  (`callbridge.b2bua.ports.Media`) in rtpengine's terms.

Nothing outside this package and `callbridge.bootstrap` imports the relay modules (`tests/test_layering.py`): the
rest of callbridge speaks of legs, offers and answers, never of rtpengine (docs/design.md, "Media").
"""
