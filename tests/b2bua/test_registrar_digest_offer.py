"""Each operation's own digest offer (`Operation.digest_algorithms`, RFC 8760): the registrar challenges a REGISTER
to an operation's domain with that operation's algorithms, SHA-256 first, and takes credentials in those only;
an operation without a list, or a domain nobody owns, gets the node's offer. Bytes, a fake directory, a fake clock.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from callbridge.b2bua.registrar import ChallengerPool, Registrar
from callbridge.callcontrol.model import Agent, Operation
from callbridge.sip import DigestResponder, Request, Response, parse, parse_auth_header
from callbridge.sip.auth import digest_response, format_auth_header, ha1

SECRET = b"registrar-offer-secret-0123456789"
PHONE = ("127.0.0.1", 40123)
T0 = 1_700_000_000.0


class Directory:
    def __init__(self, *operations: Operation) -> None:
        self.operations = {op.sip_domain: op for op in operations}
        self.agents = {(op.id, "1001"): Agent(op.id, "1001", ha1_md5=ha1("1001", op.digest_realm, "pw-1001", "MD5"),
                                              ha1_sha256=ha1("1001", op.digest_realm, "pw-1001", "SHA-256"))
                       for op in operations}

    def operation_for_domain(self, sip_domain: str) -> Operation | None:
        return self.operations.get(sip_domain)

    def get_agent(self, operation_id: str, extension: str) -> Agent | None:
        return self.agents.get((operation_id, extension))


SHA_ONLY = Operation("0042", "sha.test", digest_algorithms=("SHA-256",))
BOTH = Operation("0043", "both.test", digest_algorithms=("SHA-256", "MD5"))
NODE = Operation("0044", "node.test")  # no list: the node's


@pytest.fixture
def registrar() -> Registrar:
    return Registrar(Directory(SHA_ONLY, BOTH, NODE), ChallengerPool(SECRET, algorithms=("MD5",)))


def register(domain: str, cseq: int = 1, authorization: str | None = None) -> Request:
    lines = [f"REGISTER sip:{domain} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:40123;branch=z9hG4bKr{cseq};rport",
             "Max-Forwards: 70", f"From: <sip:1001@{domain}>;tag=f1", f"To: <sip:1001@{domain}>",
             f"Call-ID: reg@{domain}", f"CSeq: {cseq} REGISTER", "Contact: <sip:1001@127.0.0.1:40123>",
             *([f"Authorization: {authorization}"] if authorization else []), "Content-Length: 0"]
    message = parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def offered(response: Response) -> list[str]:
    assert response.status == 401
    return [parse_auth_header(v)[1]["algorithm"] for v in response.headers.get_lines("WWW-Authenticate")]


@pytest.mark.parametrize(("domain", "expected"), [
    ("sha.test", ["SHA-256"]), ("both.test", ["SHA-256", "MD5"]), ("node.test", ["MD5"]), ("nobody.test", ["MD5"])])
def test_the_challenge_offers_the_operations_own_list_else_the_nodes(registrar: Registrar, domain: str,
                                                                      expected: list[str]) -> None:
    assert offered(registrar.handle_register(register(domain), PHONE, "udp", T0)) == expected


@pytest.mark.parametrize(("domain", "algorithm"), [("sha.test", "SHA-256"), ("both.test", "SHA-256"),
                                                   ("node.test", "MD5")])
def test_a_phone_answering_the_offer_registers(registrar: Registrar, domain: str, algorithm: str) -> None:
    challenge = registrar.handle_register(register(domain), PHONE, "udp", T0)
    answer = DigestResponder("1001", "pw-1001").authorize("REGISTER", f"sip:{domain}",
                                                          challenge.headers.get_lines("WWW-Authenticate"))
    assert parse_auth_header(answer)[1]["algorithm"] == algorithm  # the strongest offered (RFC 8760 §2.4)
    assert registrar.handle_register(register(domain, 2, answer), PHONE, "udp", T0 + 0.1).status == 200
    operation = {op.sip_domain: op.id for op in (SHA_ONLY, BOTH, NODE)}[domain]
    assert [b.contact_uri for b in registrar.contacts_for(operation, "1001", T0 + 1)] == ["sip:1001@127.0.0.1:40123"]


def md5_answer(challenge: Response, domain: str) -> str:
    """An MD5 answer with the right password to the challenge's nonce, as an MD5-only phone would send it."""
    params = parse_auth_header(challenge.headers.get_lines("WWW-Authenticate")[0])[1]
    uri = f"sip:{domain}"
    response = digest_response("MD5", ha1("1001", params["realm"], "pw-1001", "MD5"), params["nonce"], "REGISTER",
                               uri, qop="auth", nc="00000001", cnonce="c0ffee")
    return format_auth_header("Digest", {"username": "1001", "realm": params["realm"], "nonce": params["nonce"],
                                         "uri": uri, "response": response, "algorithm": "MD5", "qop": "auth",
                                         "nc": "00000001", "cnonce": "c0ffee"}, challenge=False)


def test_md5_to_a_sha_256_only_operation_is_challenged_again_and_binds_nothing(registrar: Registrar) -> None:
    challenge = registrar.handle_register(register("sha.test"), PHONE, "udp", T0)
    again = registrar.handle_register(register("sha.test", 2, md5_answer(challenge, "sha.test")), PHONE, "udp",
                                      T0 + 0.1)
    assert offered(again) == ["SHA-256"]  # a new 401 naming what is offered, not stale: the password is not it
    assert "stale" not in parse_auth_header(again.headers.get_lines("WWW-Authenticate")[0])[1]
    assert registrar.contacts_for("0042", "1001", T0 + 1) == []
    assert registrar.stats["auth_failed"] == 1


def test_the_same_md5_answer_registers_where_md5_is_offered(registrar: Registrar) -> None:
    # The refusal above is the offer's doing, not the answer's: the same construction works on an MD5 operation.
    challenge = registrar.handle_register(register("node.test"), PHONE, "udp", T0)
    ok = registrar.handle_register(register("node.test", 2, md5_answer(challenge, "node.test")), PHONE, "udp",
                                   T0 + 0.1)
    assert ok.status == 200


def test_an_md5_only_phone_cannot_answer_a_sha_256_only_challenge(registrar: Registrar) -> None:
    challenge = registrar.handle_register(register("sha.test"), PHONE, "udp", T0)
    md5_only = DigestResponder("1001", ha1={"MD5": ha1("1001", "sha.test", "pw-1001", "MD5")})
    with pytest.raises(ValueError, match="no digest challenge this phone can answer"):
        md5_only.authorize("REGISTER", "sip:sha.test", challenge.headers.get_lines("WWW-Authenticate"))


def test_an_offer_changed_by_admin_keeps_the_realms_nonce_table() -> None:
    # One challenger per realm whatever the offer: a nonce used before the operation's list changed is still a
    # replay after it (ChallengerPool), not a fresh nonce in a new table.
    directory = Directory(BOTH)
    registrar = Registrar(directory, ChallengerPool(SECRET, algorithms=("MD5",)))
    challenge = registrar.handle_register(register("both.test"), PHONE, "udp", T0)
    answer = DigestResponder("1001", "pw-1001").authorize("REGISTER", "sip:both.test",
                                                          challenge.headers.get_lines("WWW-Authenticate"))
    assert registrar.handle_register(register("both.test", 2, answer), PHONE, "udp", T0 + 0.1).status == 200
    directory.operations["both.test"] = replace(BOTH, digest_algorithms=("SHA-256",))
    replay = registrar.handle_register(register("both.test", 3, answer), PHONE, "udp", T0 + 0.2)
    assert offered(replay) == ["SHA-256"]
    assert parse_auth_header(replay.headers.get_lines("WWW-Authenticate")[0])[1]["stale"] == "true"
