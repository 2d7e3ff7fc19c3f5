"""Who may call the SIP server: trusted source addresses, or HTTP digest (RFC 2617/3261).

``SipAccess.check`` answers one INVITE: allowed (from a trusted network, or
with a valid digest response), a challenge to send (401 with a fresh nonce),
or a refusal (403). Nonces are stateless: a timestamp signed with a per-process
secret, valid for ``nonce_seconds``, so a flood of INVITEs stores nothing. Only a
response that verified is remembered: its nonce count must grow (``qop=auth``),
or, without qop, its nonce is spent, so captured credentials cannot be replayed;
the digest's ``uri`` must address the request's host and port.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from cascade.telephony.sip_message import SipMessage

Verdict = Literal["allow", "challenge", "refuse"]
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def digest_response(username: str, password: str, realm: str, method: str, uri: str,
                    nonce: str, qop: str = "", nc: str = "", cnonce: str = "") -> str:
    """The ``response`` value a client computes (MD5; with or without qop=auth)."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def _target(uri: str) -> str:
    """Host and port a SIP URI addresses, lower-cased: what a digest's ``uri`` must share
    with the request's (clients differ on the user part: sipp leaves it out)."""
    address = uri.partition(":")[2].rpartition("@")[2]
    return address.split(";", 1)[0].split("?", 1)[0].lower()


def parse_authorization(value: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    return {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _PARAM.finditer(rest)}


@dataclass
class SipAccess:
    """Trusted networks, digest users, and the realm they log in to."""

    allow: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    users: dict[str, str] = field(default_factory=dict)
    realm: str = "cascade"
    nonce_seconds: float = 300.0
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    USED_LIMIT = 65536
    """Verified nonces remembered at most; expired ones are forgotten first (a nonce
    dropped before it expired could be replayed, so this is sized far above load)."""

    def __post_init__(self) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.allow]
        self._used: OrderedDict[str, int] = OrderedDict()

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def nonce(self) -> str:
        stamp = f"{int(time.time()):x}"
        signature = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        return f"{stamp}.{signature}"

    def _fresh(self, nonce: str) -> bool:
        stamp, _, signature = nonce.partition(".")
        expected = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        if not hmac.compare_digest(signature, expected):
            return False
        try:
            return time.time() - int(stamp, 16) <= self.nonce_seconds
        except ValueError:
            return False

    def challenge(self) -> str:
        return (f'Digest realm="{self.realm}", nonce="{self.nonce()}", algorithm=MD5, '
                'qop="auth"')

    def check(self, request: SipMessage, source: str) -> Verdict:
        if self.trusted(source):
            return "allow"
        if not self.users:
            return "refuse"
        credentials = parse_authorization(request.get("Authorization"))
        if not credentials:
            return "challenge"
        if not self._fresh(credentials.get("nonce", "")):
            return "challenge"  # expired or not ours: ask again with a fresh nonce
        password = self.users.get(credentials.get("username", ""))
        if password is None or credentials.get("realm") != self.realm:
            return "refuse"
        if credentials.get("algorithm", "MD5").upper() != "MD5":
            return "refuse"
        if _target(credentials.get("uri", "")) != _target(request.uri):
            return "refuse"  # a digest computed for a request to somewhere else
        expected = digest_response(
            credentials["username"], password, self.realm, request.method,
            credentials.get("uri", ""), credentials["nonce"], credentials.get("qop", ""),
            credentials.get("nc", ""), credentials.get("cnonce", ""))
        if not hmac.compare_digest(expected, credentials.get("response", "")):
            return "refuse"
        if not self._first_use(credentials["nonce"], credentials.get("qop", ""),
                               credentials.get("nc", "")):
            return "challenge"  # replayed: whoever sent it must answer a fresh nonce
        return "allow"

    def _first_use(self, nonce: str, qop: str, nc: str) -> bool:
        """Whether these verified credentials are new: a higher nonce count for their
        nonce (qop=auth), or a nonce never used before (no qop)."""
        try:
            count = int(nc, 16) if qop else 0
        except ValueError:
            return False
        last = self._used.get(nonce)
        if last is not None and (not qop or count <= last):
            return False
        self._used[nonce] = count
        self._used.move_to_end(nonce)
        while self._used and (len(self._used) > self.USED_LIMIT
                              or not self._fresh(next(iter(self._used)))):
            self._used.popitem(last=False)
        return True
