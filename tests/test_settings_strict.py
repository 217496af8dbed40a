"""Settings are checked before anything starts: a bad one is one line naming it, exit status 2; a settings file,
the environment and flags in that order of precedence; the advertised SIP address is what Via and Contact carry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from callbridge.config import ConfigError, Settings, check_on_this_machine

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "integration"))

from callnode import agent_phone, customer_phone, did_uri, load, operation_doc  # noqa: E402

from callbridge.bootstrap import bootstrap  # noqa: E402
from callbridge.phone import IncomingCall  # noqa: E402

CALLBRIDGE = [sys.executable, "-m", "callbridge"]

# (flags, environment, the one line on stderr)
BAD = [
    (["--sip-host", "localhost"], {},
     "error: sip_host: 'localhost' is not an IP address (callbridge never resolves names)"),
    (["--sip-host", "0.0.0.0"], {},
     "error: sip_host: '0.0.0.0' is a wildcard: give an address of this machine that peers can reach"),
    (["--sip-host", "192.0.2.77"], {}, "error: sip_host: '192.0.2.77' is not an address of this machine"),
    (["--sip-advertise", "::"], {},
     "error: sip_advertise: '::' is a wildcard: give an address of this machine that peers can reach"),
    (["--log-level", "LOUD"], {}, "error: log_level: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    (["--log-format", "xml"], {}, "error: log_format: 'xml' is not one of text, json"),
    (["--database-url", "mysql://u@127.0.0.1/db"], {},
     "error: database_url: unsupported database 'mysql': use sqlite:///FILE or postgresql://..."),
    (["--database-url", "sqlite:////nonexistent-callbridge/dir/x.db"], {},
     "error: database_url: the folder '/nonexistent-callbridge/dir' of the SQLite file does not exist"),
    (["--database-url", "sqlite:///:memory:"], {},
     "error: database_url: 'sqlite:///:memory:' names no file: use sqlite:///FILE (sqlite:////abs/path.db)"),
    ([], {"CALLBRIDGE_SIP_PORT": "50x"}, "error: sip_port: '50x' is not a port number"),
    ([], {"CALLBRIDGE_NODE_ID": "node one"}, "error: node_id: 'node one' is not 1-64 letters, digits, '.', '_' or '-'"),
    ([], {"CALLBRIDGE_DIGEST_ALGORITHMS": "SHA-512"},
     "error: digest_algorithms: 'SHA-512' is not a list of MD5 and SHA-256"),
    (["--drain-seconds", "-1"], {}, "error: drain_seconds: must not be negative"),
    (["--rtpengine", "tcp:127.0.0.1:2223"], {},
     "error: rtpengine: 'tcp:127.0.0.1:2223' is not udp:HOST:PORT (rtpengine's ng control protocol is UDP)"),
    (["--rtpengine", "udp:localhost:2223"], {},
     "error: rtpengine: 'localhost' in 'udp:localhost:2223' is not an IP address (callbridge never resolves names)"),
    (["--rtpengine", "udp:127.0.0.1:2223", "--rtpengine", "udp:127.0.0.1:70000"], {},
     "error: rtpengine: port '70000' in 'udp:127.0.0.1:70000' is not a port number 1-65535"),
    ([], {"CALLBRIDGE_RTPENGINE": "udp:127.0.0.1"},
     "error: rtpengine: 'udp:127.0.0.1' has no port: use udp:HOST:PORT"),
    ([], {"CALLBRIDGE_RTPENGINE": "udp:127.0.0.1:2223,udp:127.0.0.1:02223"},
     "error: rtpengine: 'udp:127.0.0.1:2223' is named twice"),
    (["--rtpengine", "udp:0.0.0.0:2223"], {},
     "error: rtpengine: 'udp:0.0.0.0:2223' is a wildcard address: name the relay's own address"),
    (["--rtpengine", "udp:::1:2223"], {},
     "error: rtpengine: 'udp:::1:2223': write an IPv6 address in brackets, udp:[ADDRESS]:PORT"),
    (["--rtpengine-dtmf-listen", "localhost:9911"], {},
     "error: rtpengine_dtmf_listen: 'localhost' is not an IP address (callbridge never resolves names)"),
    ([], {"CALLBRIDGE_RTPENGINE_DTMF_LISTEN": "127.0.0.1"},
     "error: rtpengine_dtmf_listen: '127.0.0.1' is not HOST:PORT"),
    ([], {"CALLBRIDGE_RTPENGINE_DTMF_LISTEN": "127.0.0.1:99999"},
     "error: rtpengine_dtmf_listen: port '99999' in '127.0.0.1:99999' is not a port number 0-65535"),
    (["--media-timeout-seconds", "-1"], {},
     "error: media_timeout_seconds: must not be negative (0 turns it off)"),
    ([], {"CALLBRIDGE_MEDIA_TIMEOUT_SECONDS": "soon"}, "error: media_timeout_seconds: 'soon' is not a number"),
    ([], {"CALLBRIDGE_RTPENGINE_PING_SECONDS": "0"}, "error: rtpengine_ping_seconds: '0' is not more than 0"),
    ([], {"CALLBRIDGE_RTPENGINE_PING_SECONDS": "often"},
     "error: rtpengine_ping_seconds: 'often' is not a number"),
    ([], {"CALLBRIDGE_RTPENGINE_PINGS_TO_LOSE": "0"}, "error: rtpengine_pings_to_lose: '0' is not at least 1"),
    ([], {"CALLBRIDGE_RTPENGINE_PINGS_TO_LOSE": "1.5"},
     "error: rtpengine_pings_to_lose: '1.5' is not a whole number"),
    (["--allowed-networks", "example.com"], {},
     "error: allowed_networks: 'example.com' is not a network ('example.com' does not appear to be an IPv4 or IPv6 "
     "network)"),
    (["--sip-ws-port", "70000"], {}, "error: sip_ws_port: 70000 is out of range 0-65535"),
    (["--recordings-dir", "/nonexistent-callbridge/dir/recordings"], {},
     "error: recordings_dir: the folder '/nonexistent-callbridge/dir' that would hold "
     "'/nonexistent-callbridge/dir/recordings' does not exist"),
    (["--recordings-dir", "/etc/hostname"], {}, "error: recordings_dir: '/etc/hostname' is not a folder"),
    ([], {"CALLBRIDGE_RECORDINGS_DIR": "/tmp/a\nb"},
     "error: recordings_dir: '/tmp/a\\nb' is not a folder's path (it holds a NUL or a line break)"),
    (["--rtpengine-recording-dir", "/nonexistent-callbridge/spool"], {},
     "error: rtpengine_recording_dir: '/nonexistent-callbridge/spool' is not a folder"),
    (["--sip-ws-port", "5066", "--sip-tls-cert", "/nonexistent/cert.pem"], {},
     "error: sip_tls_cert: a certificate and its key go together (sip_tls_cert and sip_tls_key)"),
    (["--sip-tls-cert", "/nonexistent/cert.pem", "--sip-tls-key", "/nonexistent/key.pem"], {},
     "error: sip_tls_cert: TLS is for the WebSocket listener; set sip_ws_port too"),
    (["--sip-ws-port", "5066", "--sip-tls-cert", "/nonexistent/cert.pem", "--sip-tls-key", "/nonexistent/key.pem"],
     {}, "error: sip_tls_cert: cannot read '/nonexistent/cert.pem' or '/nonexistent/key.pem': No such file or "
     "directory"),
]


@pytest.mark.parametrize(("flags", "env", "line"), BAD, ids=[" ".join(b[0]) or next(iter(b[1])) for b in BAD])
def test_a_bad_setting_is_one_line_and_exit_status_2(tmp_path: Path, flags: list[str], env: dict[str, str],
                                                      line: str) -> None:
    base = {"CALLBRIDGE_SIP_PORT": "0", "CALLBRIDGE_HTTP_PORT": "0",
            "CALLBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")} | base | env
    # A setting that slipped through would start a server: the timeout ends it and the assertion below fails.
    done = subprocess.run([*CALLBRIDGE, "serve", *flags], env=environ, capture_output=True, text=True, timeout=20,
                          cwd=tmp_path)
    assert (done.returncode, done.stderr.splitlines(), done.stdout) == (2, [line], "")
    assert not (tmp_path / "x.db").exists()  # nothing started, nothing created


def test_a_bad_settings_file_is_refused_with_its_key(tmp_path: Path) -> None:
    bad = tmp_path / "settings.toml"
    bad.write_text('sip_host = "127.0.0.1"\nsip_prot = 5070\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    done = subprocess.run([*CALLBRIDGE, "serve", "--settings", str(bad)], env=environ, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: settings_file: '{bad}': unknown key 'sip_prot' (known: ")
    broken = tmp_path / "broken.toml"
    broken.write_text("sip_port = \n")
    with pytest.raises(ConfigError, match=r"^settings_file: '.*broken.toml' is not valid TOML: .*line 1"):
        Settings.from_env({}, settings_file=broken)


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    file.write_text('sip_port = 5070\nhttp_port = 8081\nlog-level = "debug"\nallowed_networks = ["127.0.0.0/8", '
                    '"10.1.0.0/16"]\nnode_id = "from-file"\n')
    env = {"CALLBRIDGE_SETTINGS_FILE": str(file), "CALLBRIDGE_HTTP_PORT": "8082", "CALLBRIDGE_NODE_ID": "from-env"}
    s = Settings.from_env(env, node_id="from-flag")
    assert (s.sip_port, s.http_port, s.log_level, s.node_id) == (5070, 8082, "DEBUG", "from-flag")
    assert s.allowed_networks == ("127.0.0.0/8", "10.1.0.0/16")
    other = tmp_path / "other.toml"
    other.write_text("sip_port = 5090\n")
    assert Settings.from_env(env, settings_file=other).sip_port == 5090  # the flag's file replaces the env's


def test_rtpengine_relays_from_flags_environment_and_file(tmp_path: Path) -> None:
    assert Settings().rtpengine == () and Settings().rtpengine_relays == ()
    s = Settings.from_env({"CALLBRIDGE_RTPENGINE": " UDP:127.0.0.1:2223 , udp:[::1]:2224 "})
    assert s.rtpengine == ("udp:127.0.0.1:2223", "udp:[::1]:2224")
    assert s.rtpengine_relays == (("127.0.0.1", 2223), ("::1", 2224))
    file = tmp_path / "settings.toml"
    file.write_text('rtpengine = ["udp:127.0.0.2:2223", "udp:127.0.0.3:2223"]\n')
    assert Settings.from_env({}, settings_file=file).rtpengine_relays == (("127.0.0.2", 2223), ("127.0.0.3", 2223))
    file.write_text('rtpengine = "udp:127.0.0.4:2223"\n')
    assert Settings.from_env({}, settings_file=file).rtpengine == ("udp:127.0.0.4:2223",)
    # the flag (repeated flags arrive joined with commas) wins over the environment
    flagged = Settings.from_env({"CALLBRIDGE_RTPENGINE": "udp:127.0.0.1:2223"},
                                rtpengine="udp:127.0.0.5:1,udp:127.0.0.5:2")
    assert flagged.rtpengine_relays == (("127.0.0.5", 1), ("127.0.0.5", 2))


def test_checks_on_this_machine(tmp_path: Path) -> None:
    check_on_this_machine(Settings(database_url=f"sqlite:///{tmp_path / 'ok.db'}", http_host="0.0.0.0"))
    with pytest.raises(ConfigError, match=r"^http_host: '192\.0\.2\.78' is not an address of this machine$"):
        check_on_this_machine(Settings(http_host="192.0.2.78", database_url=f"sqlite:///{tmp_path / 'ok.db'}"))
    read_only = tmp_path / "ro"
    read_only.mkdir()
    # A read-only bind mount is not available here; a file that is a folder cannot be opened for writing either.
    (read_only / "x.db").mkdir()
    with pytest.raises(ConfigError, match=r"^database_url: '.*x.db' is not writable: Is a directory$"):
        check_on_this_machine(Settings(database_url=f"sqlite:///{read_only / 'x.db'}"))


@pytest.mark.peers
@pytest.mark.timeout(60)
async def test_the_advertised_address_is_in_via_and_contact(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callbridge.db'}"
    load(url, operation_doc())
    node = await bootstrap(Settings(sip_host="127.0.0.1", sip_advertise="127.0.0.9", sip_port=0, http_port=0,
                                    database_url=url))
    agent = customer = None
    try:
        agent = await agent_phone(node, "1001")
        customer = await customer_phone()
        await customer.call(did_uri(node), wait_answer=False)
        offered = await agent.wait_for(IncomingCall, timeout=5)
        via = offered.request.via
        assert (via.host, via.port) == ("127.0.0.9", node.sip_address[1])
        assert offered.request.contacts[0].addr.uri.host == "127.0.0.9"
        assert node.sip_address[0] == "127.0.0.1"  # bound where it was told, advertised elsewhere
    finally:
        for phone in (agent, customer):
            if phone is not None:
                await phone.close()
        await node.close()
