"""The rules of direction (docs/design.md, "The rules of direction"), checked on the source: inner layers never
import outer ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "callbridge"

# package -> callbridge packages it must never import
FORBIDDEN = {
    "sip": {"transport", "phone", "callcontrol", "b2bua", "storage", "http", "client", "cli", "bootstrap", "config"},
    "callcontrol": {"sip", "transport", "phone", "b2bua", "storage", "http", "client", "cli", "bootstrap"},
    "client": {"sip", "transport", "phone", "callcontrol", "b2bua", "storage", "http", "cli", "bootstrap", "config"},
    # The B2BUA is the SIP adapter of the domain: it uses sip and callcontrol, and reaches storage, the runtime
    # (transport) and the domain service only through its own ports (b2bua/ports.py, b2bua/context.py), which
    # bootstrap wires.
    "b2bua": {"transport", "phone", "storage", "http", "client", "cli", "bootstrap", "config", "serve", "admin",
              "demo", "tools"},
    # The HTTP API is the domain's other adapter: it speaks to callcontrol for live state and never to SIP. It reads
    # storage's read models (the durable event log, call history) directly: those reads are not the domain's, and
    # they run off the loop in storage's own functions. No other storage module may be imported (checked below).
    "http": {"sip", "transport", "phone", "b2bua", "client", "cli", "bootstrap", "config", "serve",
             "admin", "demo", "tools"},
    # The media plane (rtpengine, audio files, recordings) serves the server; the phone, a test tool, may use its
    # pure parts (G.711, RTP packets, audio), never the other way round.
    "media": {"phone", "http", "client", "cli"},
}
# rtpengine is the media plane's adapter (callbridge.media): only bootstrap wires it; everyone else speaks of legs,
# offers and answers through the Media port (b2bua/ports.py), docs/design.md "Media".
MEDIA_IMPORTERS = {"media", "bootstrap.py"}
# the only storage modules http may read from (read models), see "http" above
HTTP_STORAGE_READS = {"callbridge.storage.history", "callbridge.storage.event_log", "callbridge.storage.times",
                      "callbridge.storage.reconcile"}
# packages that must stay free of I/O and clocks
NO_IO = {"sip": {"asyncio", "socket", "time", "selectors", "threading"},
         "callcontrol": {"asyncio", "socket", "time", "selectors", "threading", "sqlalchemy", "starlette"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_inner_packages_do_not_import_outer_ones(package: str) -> None:
    bad = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "callbridge" and len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


@pytest.mark.parametrize("package", sorted(NO_IO))
def test_sans_io_packages_touch_no_sockets_or_clock(package: str) -> None:
    bad = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] in NO_IO[package]:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


def test_the_rules_see_a_violation(tmp_path: Path) -> None:
    # The checker itself must be able to fail: feed it a file that breaks a rule.
    bad = tmp_path / "x.py"
    bad.write_text("import asyncio\nfrom callbridge.http import app\n")
    assert _imports(bad) == {"asyncio", "callbridge.http"}


def test_test_modules_have_unique_basenames() -> None:
    # pytest imports test modules by basename (rootdir "prepend" mode): two test_x.py in different folders break
    # collection on a fresh clone, where no stale __pycache__ hides the clash.
    tests = Path(__file__).resolve().parent
    seen: dict[str, list[str]] = {}
    for path in tests.rglob("*.py"):
        if path.name != "__init__.py" and path.name != "conftest.py":
            seen.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_http_reads_storage_only_through_its_read_models() -> None:
    bad = []
    for path in sorted((SRC / "http").rglob("*.py")):
        for name in _imports(path):
            if name.startswith("callbridge.storage") and name not in HTTP_STORAGE_READS:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


# The relay's own modules (rtpengine and its ng protocol); media's pure parts (audio files, G.711, RTP packets,
# pcap and recordings) may serve others, the phone among them.
RELAY_MODULES = {"callbridge.media", *(f"callbridge.media.{m}" for m in ("bencode", "ng", "relays", "shell",
                                                                          "rtpengine"))}


def test_only_bootstrap_imports_the_media_adapter() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        top = path.relative_to(SRC).parts[0]
        if top in MEDIA_IMPORTERS:
            continue
        for name in _imports(path):
            if name in RELAY_MODULES:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


def test_the_media_adapter_imports_no_outer_layer() -> None:
    # callbridge.media implements b2bua's Media port; it knows nothing of call control, SIP, HTTP or storage.
    bad = []
    for path in sorted((SRC / "media").rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            outer = parts[0] == "callbridge" and len(parts) > 1 and parts[1] not in ("media", "b2bua")
            if outer or (parts[:2] == ["callbridge", "b2bua"] and name != "callbridge.b2bua.ports"):
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []
