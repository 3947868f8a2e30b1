"""A NATS operator, account and users for tests of credentials files: nkeys signed with ed25519 and
JWTs in NATS's format (what `nsc` would make; nsc is a Go tool not installable from PyPI).

Format: header {"typ": "JWT", "alg": "ed25519-nkey"}, claims with `iss` (the signer's public
nkey), `sub` (the subject's) and a `nats` object; the signature is ed25519 by the issuer's seed over
`b64url(header).b64url(claims)`, all base64url without padding.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import nacl.signing
import nkeys


@dataclass(frozen=True)
class Key:
    seed: bytes  # "S…"

    @classmethod
    def new(cls, prefix: int) -> Key:
        return cls(nkeys.encode_seed(bytes(nacl.signing.SigningKey.generate()), prefix))

    @property
    def public(self) -> str:
        return nkeys.from_seed(bytearray(self.seed)).public_key.decode()

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(bytearray(self.seed)).sign(data)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(issuer: Key, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject,
                              "nats": {**nats, "version": 2}}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    signing_input = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(issuer.sign(signing_input.encode()))


UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1,
             "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


class Operator:
    def __init__(self) -> None:
        self.key = Key.new(nkeys.PREFIX_BYTE_OPERATOR)
        self.account = Key.new(nkeys.PREFIX_BYTE_ACCOUNT)
        self.system = Key.new(nkeys.PREFIX_BYTE_ACCOUNT)

    def server_config(self) -> str:
        operator = jwt(self.key, self.key.public, "test-operator", {"type": "operator", "system_account": self.system.public})
        account = jwt(self.key, self.account.public, "ESCALATOR", {"type": "account", "limits": UNLIMITED})
        system = jwt(self.key, self.system.public, "SYS", {"type": "account", "limits": {"conn": -1, "subs": -1, "data": -1,
                                                                                          "payload": -1}})
        return (f"operator: {operator}\nsystem_account: {self.system.public}\nresolver: MEMORY\n"
                f"resolver_preload: {{\n  {self.account.public}: {account}\n  {self.system.public}: {system}\n}}\n")

    def creds(self, name: str, publish: list[str], subscribe: list[str]) -> str:
        user = Key.new(nkeys.PREFIX_BYTE_USER)
        token = jwt(self.account, user.public, name, {
            "type": "user", "pub": {"allow": publish}, "sub": {"allow": subscribe}, "subs": -1, "data": -1, "payload": -1,
        })
        return (f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
                f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n")
