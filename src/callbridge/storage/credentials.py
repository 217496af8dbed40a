"""Secrets at rest: agents' digest credentials as HA1, API tokens as SHA-256.

- HA1 (RFC 7616 §3.4.2) is `H(username ":" realm ":" password)`; storing it instead of the password lets the
  registrar verify digest responses with MD5 (RFC 2617 phones) or SHA-256 (RFC 7616) without ever keeping the
  password. The realm is the operation's SIP domain, so renaming the domain needs new passwords.
- A token is 32 random bytes from `secrets`, URL-safe base64: 256 bits, so a plain unsalted SHA-256 is enough
  (nothing to brute-force) and lets a request's token be found by an indexed equality on its hash. It is shown
  once, when created.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32


def ha1_md5(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


def ha1_sha256(username: str, realm: str, password: str) -> str:
    return hashlib.sha256(f"{username}:{realm}:{password}".encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
