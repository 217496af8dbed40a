"""rtpengine (Debian's rtpengine-daemon 10.5) as a real media relay on loopback, in userspace.

    with Rtpengine() as rtpe:                 # started, `ping` answered `pong`; stopped by its PID at the end
        ... ng to rtpe.ng_address, media on rtpe.port_min..rtpe.port_max, recordings in rtpe.recording_dir ...

The process is the one `callbridge demo` starts (`callbridge.media.local_relay.LocalRelay`: no configuration file,
no kernel forwarding, ng and media on loopback, stopped by its process group), with two differences for tests: its
ports come from the tests' free-port probe (`ports.free_port`), so that workers running at once never share a
range, and it records (pcap) into a temporary folder. `require_rtpengine` skips the test when the binary is not
installed (the only reason to skip: CI installs it with `scripts/setup --test`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from callbridge.media.local_relay import BINARY, PORT_BLOCK, LocalRelay, find_binary, ng_ping

from .ports import free_port, release

__all__ = ["BINARY", "PORT_BLOCK", "Rtpengine", "ng_ping", "require_rtpengine"]


def require_rtpengine() -> str:
    path = find_binary()
    if path is None:
        pytest.skip("rtpengine is not installed (Debian package rtpengine-daemon); `scripts/setup --test` installs it")
    return path


class Rtpengine(LocalRelay):
    def __init__(self, *, host: str = "127.0.0.1", workdir: Path | None = None,
                 extra_args: tuple[str, ...] = (), ports: int = PORT_BLOCK) -> None:
        binary = require_rtpengine()
        start = free_port(host, udp=True, tcp=False, span=ports)  # a benchmark holding many calls asks for more
        port_min = start + (start % 2)  # RTP on even ports, RTCP on the odd one above
        last = start + ports - 1
        self._block = (start, ports)  # given back when the relay is done with (see ports.py)
        workdir = workdir or Path(tempfile.mkdtemp(prefix="rtpengine-"))
        self.recording_dir = workdir / "recordings"
        super().__init__(binary, workdir, host=host, ng_port=free_port(host, udp=True, tcp=False),
                         port_min=port_min, port_max=last if last % 2 else last - 1,
                         extra_args=(f"--recording-dir={self.recording_dir}", "--recording-method=pcap",
                                     *extra_args))

    def __enter__(self) -> Rtpengine:
        # 30 s, not the demo's 10: a CI run once saw a relay give no pong (and no log line) for 10 s while two
        # test workers and their databases loaded both cores; a relay that exits still fails at once
        self.start(timeout=30.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        release(*self._block)
