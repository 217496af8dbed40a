"""An agent's digest credentials, checked the same way for REGISTER (the registrar, `Authorization`, RFC 3261
§22.2) and for an agent's INVITE (`Proxy-Authorization`, §22.3).

The credentials are the params of the Digest value for the realm (a phone may send one per realm, §22.4); an
unknown scheme is no credentials, so the caller challenges (RFC 4475 §3.3.7), and a Digest value without a realm
is kept as a fallback for the challenger to call malformed. The HA1 is the agent's stored one for the base
algorithm; an unknown operation or agent has none, and the challenger spends the same work on it as on a known one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from callbridge.callcontrol.model import Agent, Operation
from callbridge.sip import AuthError, AuthResult, DigestChallenger, Request, parse_auth_header

__all__ = ["verify_agent_digest"]


def verify_agent_digest(challenger: DigestChallenger, request: Request, header: str, realm: str,
                        operation: Operation | None, get_agent: Callable[[str, str], Agent | None],
                        now: float, algorithms: Sequence[str] | None = None) -> AuthResult | None:
    """The challenger's verdict on the `header` credentials for `realm`, or None when the request has none.

    `algorithms`: what the operation offers (`ChallengerPool.algorithms_for`); credentials in another are refused.
    """
    credentials = _credentials_for(request.headers.get_all(header), realm)
    if credentials is None:
        return None

    def lookup_ha1(username: str, _realm: str, algorithm: str) -> str | None:
        agent = None if operation is None else get_agent(operation.id, username)
        if agent is None:
            return None
        stored = agent.ha1_md5 if algorithm == "MD5" else agent.ha1_sha256 if algorithm == "SHA-256" else ""
        return stored or None

    return challenger.verify(request.method, credentials, lookup_ha1, now, request.body, algorithms=algorithms)


def _credentials_for(values: list[str], realm: str) -> dict[str, str] | None:
    """The params of the Digest value for `realm`, else of a Digest value without a realm, else None."""
    fallback: dict[str, str] | None = None
    for value in values:
        try:
            scheme, params = parse_auth_header(value)
        except AuthError:
            continue
        if scheme.lower() != "digest":
            continue  # an unknown scheme is no credentials: challenge (RFC 4475 §3.3.7)
        if params.get("realm") == realm:
            return params
        if "realm" not in params and fallback is None:
            fallback = params  # missing realm: let the challenger call it malformed
    return fallback
