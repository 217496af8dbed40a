from __future__ import annotations

import pytest

from callbridge.config import ConfigError, Settings


def test_defaults_are_the_embedded_loopback_setup() -> None:
    s = Settings.from_env({})
    assert (s.sip_host, s.sip_port, s.http_host, s.http_port) == ("127.0.0.1", 5060, "127.0.0.1", 8080)
    assert s.database_url == "sqlite:///callbridge.db"
    assert s.allowed_networks == ("127.0.0.0/8", "::1/128")


def test_environment_then_flags() -> None:
    env = {"CALLBRIDGE_SIP_PORT": "5070", "CALLBRIDGE_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:5/db",
           "CALLBRIDGE_ALLOWED_NETWORKS": "127.0.0.0/8, 10.1.0.0/16"}
    s = Settings.from_env(env, sip_port=5080, http_port=None)
    assert s.sip_port == 5080  # the flag wins over the environment
    assert s.http_port == 8080  # an absent flag leaves the default
    assert s.database_url == "postgresql+psycopg://x@127.0.0.1:5/db"
    assert s.allowed_networks == ("127.0.0.0/8", "10.1.0.0/16")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALLBRIDGE_SIP_PORT": "50x"}, "sip_port: '50x' is not a port number"),
        ({"CALLBRIDGE_HTTP_PORT": "70000"}, "http_port: 70000 is out of range 0-65535"),
        ({"CALLBRIDGE_ALLOWED_NETWORKS": "example.com"}, "allowed_networks: 'example.com' is not a network"),
        ({"CALLBRIDGE_ALLOWED_NETWORKS": " , "}, "allowed_networks: at least one network is required"),
        ({"CALLBRIDGE_DRAIN_SECONDS": "-1"}, "drain_seconds: must not be negative"),
        ({"CALLBRIDGE_DIRECTORY_POLL_SECONDS": "-1"}, "directory_poll_seconds: '-1' is not a finite number"),
        ({"CALLBRIDGE_DIRECTORY_POLL_SECONDS": "soon"}, "directory_poll_seconds: 'soon' is not a number"),
        ({"CALLBRIDGE_DIRECTORY_POLL_SECONDS": "nan"}, "directory_poll_seconds: 'nan' is not a finite number"),
        ({"CALLBRIDGE_REGISTRATION_MIN_EXPIRES": "0"}, "registration_min_expires: 0 is out of range 1-3600"),
        ({"CALLBRIDGE_REGISTRATION_MIN_EXPIRES": "3601"}, "registration_min_expires: 3601 is out of range 1-3600"),
        ({"CALLBRIDGE_REGISTRATION_MIN_EXPIRES": "1.5"},
         "registration_min_expires: '1.5' is not a whole number of seconds"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(message)


def test_digest_algorithms_in_order_from_the_environment() -> None:
    assert Settings().digest_algorithms == ("MD5",)  # the default every phone answers (RFC 8760 order is opt-in)
    settings = Settings.from_env({"CALLBRIDGE_DIGEST_ALGORITHMS": "md5, SHA-256"})
    assert settings.digest_algorithms == ("MD5", "SHA-256")
    for bad in ("", "SHA-512", "MD5,crc32"):
        with pytest.raises(ConfigError, match="digest_algorithms"):
            Settings(digest_algorithms=bad)  # type: ignore[arg-type]


def test_registration_min_expires_from_the_environment() -> None:
    assert Settings().registration_min_expires == 60
    assert Settings.from_env({"CALLBRIDGE_REGISTRATION_MIN_EXPIRES": "2"}).registration_min_expires == 2


def test_directory_poll_seconds_from_the_environment() -> None:
    assert Settings().directory_poll_seconds == 2.0
    assert Settings.from_env({"CALLBRIDGE_DIRECTORY_POLL_SECONDS": "0.5"}).directory_poll_seconds == 0.5
    assert Settings.from_env({"CALLBRIDGE_DIRECTORY_POLL_SECONDS": "0"}).directory_poll_seconds == 0.0  # off
