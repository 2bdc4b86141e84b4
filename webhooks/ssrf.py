"""Refuse webhook URLs that point into our own network (server-side request forgery).

Anyone who may create a webhook destination chooses the URL we POST to. Without a check, ``http://127.0.0.1:6379/``
or ``http://169.254.169.254/`` (a cloud metadata service) would make EventRelay a proxy into places only it can
reach. ``check_url`` resolves the host the way the HTTP client will (``socket.getaddrinfo``, every address, IPv4 and
IPv6, so ``localhost``, ``[::1]``, ``[::ffff:127.0.0.1]``, ``2130706433`` and ``0177.0.0.1`` all come out as the
loopback address they are) and refuses the URL if *any* address is not publicly routable: a name with one public
and one private record would otherwise let the connection land on the private one.

The host checked is the one the HTTP client will connect to: the URL is parsed the way requests prepares it
(urllib3's ``parse_url``), and a URL that ``urlsplit`` reads differently is refused, as is anything such parsers
disagree about (a backslash, whitespace or a control character anywhere, an unencoded ``@`` in the user
information, a percent-encoded host): ``http://127.0.0.1:9305\\@8.8.8.8/`` is ``8.8.8.8`` to ``urlsplit`` but
``127.0.0.1`` to urllib3.

Resolving here and connecting later leaves a window for DNS rebinding; call ``check_url`` right before each
attempt (not only when a destination is saved) to keep that window short.
"""

import functools
import ipaddress
import re
import socket
import unicodedata
from typing import NamedTuple
from urllib.parse import urlsplit

import requests
from urllib3.util import parse_url

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
# "scheme://user:password@host" -> group 1 is "scheme://user:".
_PASSWORD = re.compile(r"^([^/?#]*//[^/?#@:]*:)[^/?#@]*@")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURL(ValueError):
    """A destination URL we will not send to: bad scheme, no host, or a host resolving to a non-public address.

    ``host``, ``address`` and ``reason`` are set where they apply (``reason`` is e.g. ``"loopback"``).
    """

    def __init__(
        self, message: str, *, url: str, host: str | None = None, address: str | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.url = url
        self.host = host
        self.address = address
        self.reason = reason


class UnresolvableURL(UnsafeURL):
    """The host did not resolve. Unlike the other refusals this may be temporary (a DNS outage)."""


class Target(NamedTuple):
    """Where the HTTP client will connect for a URL."""

    scheme: str
    host: str
    port: int


def check_url(url: str, allow_private: bool) -> None:
    """Return ``None`` if ``url`` may be POSTed to; raise ``UnsafeURL`` (a ``ValueError``) saying why not.

    The scheme must be http or https and a host is required. With ``allow_private`` (``ER_WEBHOOK_ALLOW_PRIVATE``,
    for tests and private deployments) non-public addresses are accepted, but the host must still resolve.
    This performs a DNS lookup for host names; IP literals resolve locally.
    """
    shown = without_password(url)
    target = connect_target(url)
    host = target.host
    try:
        infos = socket.getaddrinfo(host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnresolvableURL(
            f"cannot resolve host {host!r} of webhook URL {shown!r}: {exc}", url=shown, host=host, reason="unresolvable"
        ) from None
    if allow_private:
        return

    for info in infos:
        address = str(info[4][0])
        reason = non_public_reason(ipaddress.ip_address(address.split("%", 1)[0]))
        if reason:
            raise UnsafeURL(
                f"webhook URL {shown!r} is refused: host {host!r} resolves to {address}, {_article(reason)} {reason}"
                " address (set ER_WEBHOOK_ALLOW_PRIVATE=1 to allow non-public destinations)",
                url=shown,
                host=host,
                address=address,
                reason=reason,
            )


# The answer depends on the URL's text alone, and working it out (two parsers and a prepared request) costs more than
# the rest of a delivery's check: remembered per URL. A refusal raises, so it is never remembered. What the host
# resolves to is never remembered: check_url asks again before every attempt.
@functools.lru_cache(maxsize=4096)
def connect_target(url: str) -> Target:
    """The scheme, host and port requests will connect to for ``url``; ``UnsafeURL`` if it is not an http(s) URL
    with a host, or if parsers could read it as two different places.

    requests prepares the URL with urllib3's ``parse_url`` and connects to the host of the prepared URL; the rest
    of Python (and most other code that looks at a URL) uses ``urlsplit``. Both must name the same host and port.
    (The delivery engine sends that same prepared URL through urllib3: ``webhooks.delivery.request_line``.)
    """
    shown = without_password(url)
    for position, char in enumerate(url):
        kind = _ambiguous_character(char)
        if kind:
            raise UnsafeURL(
                f"webhook URL {shown!r} contains {kind} at position {position}; percent-encode it",
                url=shown,
                reason="ambiguous",
            )
    try:
        parts = urlsplit(url)
        split_port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"webhook URL {shown!r} is malformed: {exc}", url=shown, reason="malformed") from None
    if parts.scheme not in ALLOWED_SCHEMES:
        raise UnsafeURL(
            f"webhook URL {shown!r} has scheme {parts.scheme!r}; only http and https are allowed",
            url=shown,
            reason="scheme",
        )
    if not parts.hostname:
        raise UnsafeURL(f"webhook URL {shown!r} has no host", url=shown, reason="no-host")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if "@" in userinfo:
        raise UnsafeURL(
            f"webhook URL {shown!r} has more than one '@' before its host; percent-encode an '@' in the user or"
            " password as %40",
            url=shown,
            reason="ambiguous",
        )
    if "%" in hostport:
        raise UnsafeURL(f"webhook URL {shown!r} has a percent-encoded host", url=shown, reason="ambiguous")
    try:
        prepared = parse_url(requests.Request("POST", url).prepare().url or "")
    except (requests.RequestException, ValueError) as exc:
        raise UnsafeURL(f"webhook URL {shown!r} is malformed: {exc}", url=shown, reason="malformed") from None
    split_host = parts.hostname
    client_host = (prepared.host or "").strip("[]").lower()
    client_port = prepared.port or DEFAULT_PORTS.get(prepared.scheme or "", 0)
    # A non-ASCII name is IDNA-encoded by requests, so compare the encoded form for those.
    comparable = split_host if split_host.isascii() else client_host
    split_target = (parts.scheme, comparable, split_port or DEFAULT_PORTS[parts.scheme])
    if (prepared.scheme, client_host, client_port) != split_target:
        raise UnsafeURL(
            f"webhook URL {shown!r} is ambiguous: it reads as host {split_host!r} port {split_port}, but the HTTP"
            f" client would connect to host {client_host!r} port {client_port}",
            url=shown,
            host=client_host,
            reason="ambiguous",
        )
    return Target(parts.scheme, client_host, client_port)


def _ambiguous_character(char: str) -> str:
    """What ``char`` is if parsers disagree about it in a URL (RFC 3986 allows none of these unencoded)."""
    if char == "\\":
        return "a backslash"
    if char.isspace():
        return "whitespace"
    if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
        return f"an invisible or control character (U+{ord(char):04X})"
    return ""


def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address (``"loopback"``, ``"private"``, ...), or ``None`` if it is.

    IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``) are judged by
    the IPv4 address, which is where a connection to them ends up.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return non_public_reason(embedded)
    # Checked from most to least specific so the message names the useful property: 127.0.0.1 is also "private".
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        # is_global is true for much of the multicast space; it is never a valid HTTP destination.
        return "multicast"
    if address.is_reserved:
        # Before "private": 240.0.0.0/4 and 255.255.255.255 are both, and "reserved" says more.
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        # E.g. 100.64.0.0/10, carrier-grade NAT: neither private nor public.
        return "non-global"
    return None


def without_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, so refusals can be logged and stored.

    A regular expression rather than ``urlsplit`` because it must work on URLs ``urlsplit`` rejects.
    """
    return _PASSWORD.sub(r"\1***@", url, count=1)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
