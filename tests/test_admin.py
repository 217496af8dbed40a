"""`callbridge admin` through Typer's CliRunner on a SQLite file: create, list (table and JSON), tokens shown
once and stored hashed, the TOML loader, and bad input as one line on stderr with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callbridge.cli import app
from callbridge.storage import administration as adm
from callbridge.storage.credentials import ha1_md5, ha1_sha256, token_sha256
from callbridge.storage.database import make_engine

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "operation.toml"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'admin.db'}"


def run(db: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["admin", "--database-url", db, *args])
    return result.exit_code, result.stdout, result.stderr


def ok(db: str, *args: str) -> str:
    code, out, err = run(db, *args)
    assert code == 0, err
    return out


def refused(db: str, *args: str) -> str:
    code, out, err = run(db, *args)
    assert code == 1
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def _setup(db: str) -> None:
    ok(db, "operation", "create", "0042", "--domain", "0042.callbridge.test", "--name", "Acme")
    ok(db, "queue", "create", "0042", "support")


def test_create_and_list_everything(db: str) -> None:
    _setup(db)
    ok(db, "agent", "create", "0042", "1001", "--name", "Ana", "--password", "secret-1001", "--queue", "support")
    ok(db, "aux", "create", "0042", "2", "Break")
    ok(db, "activity", "create", "0042", "1", "10", "Sale")
    ok(db, "trunk", "create", "0042", "carrier", "--host", "127.0.0.1", "--port", "5080",
       "--dial-pattern", "3[0-9]{9}", "--prefix", "57", "--inbound-network", "127.0.0.1")
    ok(db, "did", "create", "0042", "6015550100", "--queue", "support", "--trunk", "carrier")

    ops = json.loads(ok(db, "operation", "list", "--json"))
    assert [(o["id"], o["sip_domain"], o["name"]) for o in ops] == [("0042", "0042.callbridge.test", "Acme")]
    agents = json.loads(ok(db, "agent", "list", "0042", "--json"))
    assert agents == [{"operation_id": "0042", "extension": "1001", "name": "Ana", "queues": ["support"]}]
    assert json.loads(ok(db, "aux", "list", "0042", "--json")) == [{"operation_id": "0042", "id": "2",
                                                                     "name": "Break"}]
    assert json.loads(ok(db, "activity", "list", "0042", "--json")) == [
        {"operation_id": "0042", "group": 1, "code": "10", "name": "Sale"}]
    trunk = json.loads(ok(db, "trunk", "list", "0042", "--json"))[0]
    assert trunk["dial_plan"]["allowed_patterns"] == ["3[0-9]{9}"] and trunk["dial_plan"]["prefix"] == "57"
    assert trunk["inbound_networks"] == ["127.0.0.1/32"]
    assert [d["number"] for d in trunk["dids"]] == ["6015550100"]
    assert json.loads(ok(db, "did", "list", "0042", "--json")) == [
        {"operation_id": "0042", "number": "6015550100", "queue": "support", "trunk": "carrier"}]
    assert json.loads(ok(db, "queue", "list", "0042", "--json"))[0]["name"] == "support"
    table = ok(db, "agent", "list", "0042")
    assert "1001" in table and "Ana" in table and "support" in table


def test_agent_password_is_stored_as_ha1_only(db: str) -> None:
    _setup(db)
    ok(db, "agent", "create", "0042", "1001", "--password", "secret-1001")
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            (agent,) = adm.list_agents(conn, "0042")
            raw = conn.exec_driver_sql("SELECT * FROM agents").all()
    finally:
        engine.dispose()
    assert agent.ha1_md5 == ha1_md5("1001", "0042.callbridge.test", "secret-1001")
    assert agent.ha1_sha256 == ha1_sha256("1001", "0042.callbridge.test", "secret-1001")
    assert "secret-1001" not in repr(raw)


def test_token_is_shown_once_stored_hashed_and_revocable(db: str) -> None:
    _setup(db)
    created = json.loads(ok(db, "token", "create", "0042", "--label", "crm", "--json"))
    plain = created["token"]
    assert len(plain) >= 40
    listed = json.loads(ok(db, "token", "list", "--json"))
    assert listed == [{"id": created["id"], "operation_id": "0042", "concurrency_limit": 2, "daily_quota": None,
                       "label": "crm", "revoked": False}]
    assert plain not in ok(db, "token", "list") + ok(db, "token", "list", "--json")
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            token = adm.find_token(conn, plain)
            assert token is not None and token.hash == token_sha256(plain) and token.id == created["id"]
            assert adm.find_token(conn, plain + "x") is None
            assert plain not in repr(conn.exec_driver_sql("SELECT * FROM tokens").all())
    finally:
        engine.dispose()
    assert ok(db, "token", "revoke", created["id"]).strip() == f"token {created['id']} of operation 0042 revoked"
    assert json.loads(ok(db, "token", "list", "0042", "--json"))[0]["revoked"] is True
    assert refused(db, "token", "revoke", created["id"]) == f"error: token {created['id']} is already revoked"


def test_token_limits(db: str) -> None:
    _setup(db)
    ok(db, "token", "create", "0042", "--concurrency-limit", "5", "--daily-quota", "1000")
    (token,) = json.loads(ok(db, "token", "list", "0042", "--json"))
    assert (token["concurrency_limit"], token["daily_quota"]) == (5, 1000)
    assert refused(db, "token", "create", "0042", "--concurrency-limit", "0") == \
        "error: concurrency_limit: 0 is below 1"


@pytest.mark.parametrize(("args", "message"), [
    (("operation", "create", "0042", "--domain", "other.test"), "error: operation '0042' already exists"),
    (("operation", "create", "0043", "--domain", "0042.callbridge.test"),
     "error: sip_domain: '0042.callbridge.test' already belongs to another operation"),
    (("operation", "create", "0043", "--domain", "x.test", "--time-zone", "Mars/Olympus"),
     "error: time_zone: 'Mars/Olympus' is not an IANA time zone"),
    (("agent", "create", "0042", "10a1", "--password", "secret-1001"),
     "error: extension: '10a1' is not an extension (digits only)"),
    (("agent", "create", "0042", "1001", "--password", "short"), "error: password: at least 8 characters are required"),
    (("agent", "create", "0099", "1001", "--password", "secret-1001"), "error: operation '0099' does not exist"),
    (("agent", "create", "0042", "1001", "--password", "secret-1001", "--queue", "nope"),
     "error: queues: queue 'nope' does not exist in operation '0042'"),
    (("trunk", "create", "0042", "t", "--host", "127.0.0.1", "--dial-pattern", "[0-9"),
     "error: dial_patterns: '[0-9' is not a regular expression (unterminated character set at position 0)"),
    (("trunk", "create", "0042", "t", "--host", "127.0.0.1", "--inbound-network", "10.0.0.300/8"),
     "error: inbound_networks: '10.0.0.300/8' is not a network"),
    (("did", "create", "0042", "6015550100", "--queue", "nope"),
     "error: queue: queue 'nope' does not exist in operation '0042'"),
    (("activity", "create", "0042", "3", "10", "Sale"), "error: group: 3 is not 1 or 2"),
    (("token", "revoke", "77"), "error: token 77 does not exist"),
    (("agent", "list", "0099"), "error: operation '0099' does not exist"),
])
def test_bad_input_is_one_line_and_changes_nothing(db: str, args: tuple[str, ...], message: str) -> None:
    _setup(db)
    assert refused(db, *args) == message
    assert [o["id"] for o in json.loads(ok(db, "operation", "list", "--json"))] == ["0042"]
    assert json.loads(ok(db, "agent", "list", "0042", "--json")) == []


def test_bad_database_url(tmp_path: Path) -> None:
    assert refused("mysql://x@127.0.0.1/db", "operation", "list") == \
        "error: unsupported database 'mysql': use sqlite:///FILE or postgresql://..."
    missing_dir = tmp_path / "no" / "such" / "dir" / "x.db"
    assert refused(f"sqlite:///{missing_dir}", "operation", "list").startswith("error: database: ")


def test_database_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("CALLBRIDGE_DATABASE_URL", url)
    result = CliRunner().invoke(app, ["admin", "operation", "create", "7", "--domain", "seven.test"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "env.db").exists()
    assert json.loads(ok(url, "operation", "list", "--json"))[0]["id"] == "7"


def test_load_the_example_operation(db: str) -> None:
    out = ok(db, "load", str(EXAMPLE))
    assert out.splitlines()[0] == (f"operation 0042 loaded from {EXAMPLE}: 2 queues, 2 agents, 2 aux_states, "
                                   "3 activity_codes, 1 trunks, 2 dids, 1 tokens, 1 webhooks, 0 supervisors")
    plain = out.splitlines()[1].split(": ", 1)[1]
    agents = json.loads(ok(db, "agent", "list", "0042", "--json"))
    assert [(a["extension"], a["queues"]) for a in agents] == [("1001", ["support", "sales"]),
                                                               ("1002", ["support"])]
    trunk = json.loads(ok(db, "trunk", "list", "0042", "--json"))[0]
    assert trunk["dial_plan"] == {"allowed_patterns": ["3[0-9]{9}", "60[0-9]{8}"], "strip": 0, "prefix": "57",
                                  "min_length": 10, "max_length": 14}
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            token = adm.find_token(conn, plain)
            (operation,) = adm.list_operations(conn)
    finally:
        engine.dispose()
    assert token is not None and token.label == "crm"
    assert (operation.time_zone, operation.acw_seconds, operation.default_queue) == ("America/Bogota", 15.0,
                                                                                     "support")


def test_load_is_all_or_nothing(db: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('queue = "sales"\ntrunk', 'queue = "nope"\ntrunk'))
    assert refused(db, "load", str(bad)) == "error: dids[1]: queue: queue 'nope' does not exist in operation '0042'"
    assert json.loads(ok(db, "operation", "list", "--json")) == []


@pytest.mark.parametrize(("text", "message"), [
    ("[operation\n", "not valid TOML"),
    ('[operation]\nid = "1"\nsip_domain = "a.test"\ncolour = "red"\n',
     "[operation]: unknown key(s) colour; expected "),
    ('[operation]\nid = "1"\nsip_domain = "a.test"\n[[agents]]\nextension = "1001"\n',
     "agents[0]: missing key(s) password"),
    ('[operations]\nid = "1"\n', "unknown section(s) operations"),
])
def test_load_refuses_bad_files(db: str, tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "op.toml"
    f.write_text(text)
    assert message in refused(db, "load", str(f))


def test_load_missing_file(db: str, tmp_path: Path) -> None:
    assert refused(db, "load", str(tmp_path / "none.toml")) == \
        f"error: {tmp_path / 'none.toml'}: No such file or directory"


def test_operation_create_takes_the_hold_music_and_refuses_a_file_it_cannot_play(db: str, tmp_path: Path) -> None:
    import math
    import struct
    import wave

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    assert refused(db, "operation", "create", "0042", "--domain", "a.test", "--hold-music", str(bad)) == (
        f"error: hold_music: {bad}: not a WAV file: it does not start with RIFF")
    assert refused(db, "operation", "create", "0042", "--domain", "a.test", "--transfer-audio", "silence") == (
        "error: transfer_audio: 'silence' is not 'ringback' or 'music'")
    assert json.loads(ok(db, "operation", "list", "--json")) == []
    good = tmp_path / "hold.wav"
    with wave.open(str(good), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 3))) for i in range(8000)))
    ok(db, "operation", "create", "0042", "--domain", "a.test", "--hold-music", str(good), "--transfer-audio",
       "music", "--ringback-tone", "us")
    [listed] = json.loads(ok(db, "operation", "list", "--json"))
    assert (listed["hold_music_name"], listed["transfer_audio"], listed["ringback_tone"]) == ("hold.wav", "music", "us")
    assert "hold_music" not in listed  # the converted audio stays in the database


def test_queue_create_and_update_take_the_waiting_audio_and_refuse_what_cannot_play(db: str, tmp_path: Path) -> None:
    import math
    import struct
    import wave

    def write(name: str, seconds: float) -> Path:
        path = tmp_path / name
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 3)))
                                     for i in range(int(seconds * 8000))))
        return path

    ok(db, "operation", "create", "0042", "--domain", "a.test")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    assert refused(db, "queue", "create", "0042", "support", "--announcement", str(bad)) == (
        f"error: announcement: {bad}: not a WAV file: it does not start with RIFF")
    notice = write("notice.wav", 6)
    assert refused(db, "queue", "create", "0042", "support", "--announcement", str(notice),
                   "--announcement-interval", "6") == (
        "error: announcement_interval: 6.0 s is not longer than the announcement (6.0 s): no music would play "
        "between two announcements")
    assert json.loads(ok(db, "queue", "list", "0042", "--json")) == []
    ok(db, "queue", "create", "0042", "support", "--music", str(write("wait.wav", 2)), "--announcement",
       str(notice), "--announcement-interval", "20")
    [listed] = json.loads(ok(db, "queue", "list", "0042", "--json"))
    assert (listed["music_name"], listed["announcement_name"], listed["announcement_interval"]) == (
        "wait.wav", "notice.wav", 20.0)
    assert "music" not in listed and "announcement" not in listed  # the converted audio stays in the database
    ok(db, "queue", "update", "0042", "support", "--set", "music=")
    [listed] = json.loads(ok(db, "queue", "list", "0042", "--json"))
    assert (listed["music_name"], listed["announcement_name"]) == ("", "notice.wav")  # the operation's music again
