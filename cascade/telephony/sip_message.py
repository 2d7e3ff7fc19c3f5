"""SIP messages (RFC 3261) as the UAS needs them: parse a datagram, build responses and a BYE.

Only what a user agent server on UDP uses: the start line, headers (compact
forms expanded, names case-insensitive), the body sized by Content-Length.
``parse`` raises ``SipError`` for anything that is not a well-formed message;
the server drops such datagrams, since without a Via there is nobody to answer.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from cascade.errors import CascadeError
from cascade.telephony import is_number

MAX_DATAGRAM = 16 * 1024
COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
           "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
           "v": "via"}
CANONICAL = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate"}
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 405: "Method Not Allowed", 481: "Call/Transaction Does Not Exist",
           486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
           500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable"}
_START = re.compile(r"^(?:([A-Z]+) (\S+) SIP/2\.0|SIP/2\.0 ([0-9]{3}) ?(.*))$")
_TAG = re.compile(r";\s*tag=([^;>\s]+)", re.IGNORECASE)
_URI = re.compile(r"<([^>]*)>")


class SipError(CascadeError):
    """A datagram that is not a SIP message we can answer."""


def header_name(name: str) -> str:
    """Canonical spelling of a header name ("v" -> "Via", "call-id" -> "Call-ID")."""
    lower = name.strip().lower()
    lower = COMPACT.get(lower, lower)
    return CANONICAL.get(lower) or "-".join(part.capitalize() for part in lower.split("-"))


@dataclass(slots=True)
class SipMessage:
    """A request (``method``/``uri``) or a response (``status``/``reason``)."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        wanted = header_name(name)
        return next((v for n, v in self.headers if n == wanted), default)

    def all(self, name: str) -> list[str]:
        wanted = header_name(name)
        return [v for n, v in self.headers if n == wanted]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.get("CSeq").partition(" ")
        if not is_number(number):
            raise SipError(f"CSeq {self.get('CSeq')!r} is not 'NUMBER METHOD'")
        return int(number), method.strip().upper()

    @property
    def from_tag(self) -> str:
        return tag_of(self.get("From"))

    @property
    def to_tag(self) -> str:
        return tag_of(self.get("To"))

    @property
    def branch(self) -> str:
        found = re.search(r";\s*branch=([^;,\s]+)", self.get("Via"), re.IGNORECASE)
        return found.group(1) if found else ""

    def encode(self) -> bytes:
        start = (f"{self.method} {self.uri} SIP/2.0" if self.method
                 else f"SIP/2.0 {self.status} {self.reason}")
        lines = [start, *(f"{n}: {v}" for n, v in self.headers if n != "Content-Length")]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def tag_of(value: str) -> str:
    found = _TAG.search(value.split(">", 1)[1] if ">" in value else value)
    return found.group(1) if found else ""


def uri_of(value: str) -> str:
    """The URI inside a From/To/Contact value ("Bob <sip:bob@h>;tag=1" -> "sip:bob@h")."""
    found = _URI.search(value)
    return found.group(1) if found else value.split(";", 1)[0].strip()


def parse(data: bytes) -> SipMessage:
    if len(data) > MAX_DATAGRAM:
        raise SipError(f"datagram of {len(data)} bytes is larger than {MAX_DATAGRAM}")
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    start = _START.match(lines[0].strip())
    if start is None:
        raise SipError(f"not a SIP start line: {lines[0][:80]!r}")
    message = SipMessage(method=start.group(1) or "", uri=start.group(2) or "",
                         status=int(start.group(3) or 0), reason=start.group(4) or "")
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0] in " \t" and message.headers:  # a folded continuation line
            name, value = message.headers[-1]
            message.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipError(f"malformed header line {line[:80]!r}")
        message.headers.append((header_name(name), value.strip()))
    declared = message.get("Content-Length", str(len(body))).strip()
    if not is_number(declared) or int(declared) > len(body):
        raise SipError(f"Content-Length {declared!r} does not match a body of {len(body)} "
                       "bytes")
    message.body = body[: int(declared)]
    for needed in ("Via", "Call-ID", "CSeq", "From", "To"):
        if not message.get(needed):
            raise SipError(f"missing {needed} header")
    message.cseq  # noqa: B018 - validates the CSeq header
    return message


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def response(request: SipMessage, status: int, *, to_tag: str = "", source: tuple[str, int]
             | None = None, headers: list[tuple[str, str]] | None = None,
             body: bytes = b"", reason: str | None = None) -> SipMessage:
    """A response to ``request``: its Vias (with received/rport), From, To (+tag), Call-ID, CSeq."""
    vias = request.all("Via")
    if vias and source is not None:
        top = vias[0]
        if re.search(r";\s*rport(?=[;\s]|$)", top):
            top = re.sub(r";\s*rport(?=[;\s]|$)", f";rport={source[1]}", top, count=1)
        if "received=" not in top:
            top += f";received={source[0]}"
        vias = [top, *vias[1:]]
    to = request.get("To")
    if to_tag and not tag_of(to):
        to = f"{to};tag={to_tag}"
    out = SipMessage(status=status, reason=reason or REASONS.get(status, ""), body=body)
    out.headers = [*(("Via", v) for v in vias), ("From", request.get("From")), ("To", to),
                   ("Call-ID", request.call_id), ("CSeq", request.get("CSeq")),
                   ("Server", "cascade"), *(headers or [])]
    return out


def bye(invite: SipMessage, local_tag: str, cseq: int, via: tuple[str, int]
        ) -> tuple[SipMessage, str]:
    """A BYE from our side of the dialog ``invite`` opened, and the branch it goes out on."""
    branch = new_branch()
    out = SipMessage(method="BYE", uri=uri_of(invite.get("Contact")) or uri_of(invite.get("From")))
    out.headers = [
        ("Via", f"SIP/2.0/UDP {via[0]}:{via[1]};branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"{invite.get('To')};tag={local_tag}"),
        ("To", invite.get("From")), ("Call-ID", invite.call_id),
        ("CSeq", f"{cseq} BYE"), ("User-Agent", "cascade")]
    return out, branch
