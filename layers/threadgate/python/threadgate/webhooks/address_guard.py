"""Which webhook URLs the gateway may call (server-side request forgery guard).

Checked twice: at tool registration (`check_webhook_url`) and again at every delivery on the
addresses the host resolves to THEN (`resolve_safe`), because DNS may change between the two
(DNS rebinding). Delivery then connects to the vetted address itself, so no second lookup can
swap it.

Policy. A public (globally routable) address is always allowed. ``allow_private`` (local mode, or
a deployment that sets THREADGATE_ALLOW_PRIVATE_WEBHOOKS) additionally allows the places a
self-hosted receiver really lives: loopback, RFC 1918 private ranges, shared/CGNAT 100.64.0.0/10
(e.g. Tailscale), IPv6 unique-local fc00::/7 and the old site-local fec0::/10, and plain http.
It NEVER allows:
- link-local 169.254.0.0/16 and fe80::/10, and the cloud metadata endpoints (169.254.169.254,
  AWS's fd00:ec2::254, Alibaba's 100.100.100.200): they hand out the instance's credentials;
- unspecified/"this network" (0.0.0.0/8, ::): connecting there reaches the local host, a
  classic bypass of a loopback check;
- multicast, broadcast, reserved, documentation and benchmarking ranges: no receiver lives there.
IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, 6to4 2002::/16, NAT64
64:ff9b::/96) are judged by the IPv4 address the packets end up at. The forms whose IPv4 address
cannot be told or that no receiver uses are refused outright: IPv4-compatible ::a.b.c.d
(deprecated; Python calls ::127.0.0.1 global), IPv4-translated ::ffff:0:a.b.c.d, local-use NAT64
64:ff9b:1::/48 (the operator picks where the IPv4 address sits) and Teredo 2001::/32.
A host that resolves to several addresses is refused if ANY of them is refused: an attacker
controls the order in which they are tried.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from threadgate.domain.errors import InvalidRequest

# socket.getaddrinfo's shape: called as resolver(host, port, 0, socket.SOCK_STREAM) and returning
# (family, type, proto, canonname, sockaddr) tuples whose sockaddr[0] is the address text.
Resolver = Callable[..., Sequence[tuple[Any, ...]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PARAM = "webhook_url"
MAX_URL_LENGTH = 2048

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fec0::/10")
)
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ONE = ipaddress.IPv6Address("::1")
_OPAQUE_IPV4_FORMS = tuple(
    ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "2001::/32")
)


class AddressNotAllowed(InvalidRequest):
    """The URL or an address it resolves to is outside the policy above."""

    def __init__(self, message: str):
        super().__init__(message, param=PARAM)


class UnresolvableHost(InvalidRequest):
    """DNS gave no address (may be transient: delivery retries it, registration refuses it)."""

    def __init__(self, message: str = "webhook_url host could not be resolved"):
        super().__init__(message, param=PARAM)


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed, statically checked webhook URL."""

    scheme: Literal["http", "https"]
    host: str  # hostname or IP literal, without brackets
    port: int
    host_header: str  # what goes in Host (and the URL the receiver believes it was called on)
    path: str  # path + query, at least "/"

    @property
    def host_is_ip(self) -> bool:
        return _parse_ip(self.host) is not None

    def url_for(self, ip: str) -> str:
        """The URL that connects to the vetted address ``ip`` instead of resolving again."""
        address = ip.split("%", 1)[0]  # a zone id never survives the policy, but never put one in a URL
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"


def check_webhook_url(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> None:
    """Registration check: raises InvalidRequest (param "webhook_url") unless ``url`` is an https
    (or, with ``allow_private``, http) URL whose host resolves only to allowed addresses."""
    target = parse_webhook_url(url, allow_private=allow_private)
    resolve_safe(target.host, target.port, allow_private=allow_private, resolver=resolver)


def parse_webhook_url(url: str, *, allow_private: bool) -> WebhookTarget:
    """The checks that need no DNS: scheme, host present, no credentials, sane length and port."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"webhook_url must be a URL of at most {MAX_URL_LENGTH} characters", param=PARAM)
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise InvalidRequest("webhook_url must not contain spaces or control characters", param=PARAM)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRequest("webhook_url must be an http or https URL", param=PARAM)
    if scheme == "http" and not allow_private:
        raise InvalidRequest("webhook_url must use https", param=PARAM)
    if parts.username is not None or parts.password is not None:
        # Stored and listed in clear; the signature is what authenticates the gateway.
        raise InvalidRequest("webhook_url must not contain credentials", param=PARAM)
    host = parts.hostname
    if not host:
        raise InvalidRequest("webhook_url has no host", param=PARAM)
    try:
        explicit_port = parts.port
        # Non-ASCII names go on the wire (Host, SNI) in their IDNA form.
        host = host if host.isascii() else host.encode("idna").decode("ascii")
    except ValueError:  # UnicodeError is a ValueError
        raise InvalidRequest("webhook_url has an invalid host or port", param=PARAM) from None
    if explicit_port == 0:  # not a destination; below it would silently become the default port
        raise InvalidRequest("webhook_url has an invalid host or port", param=PARAM)
    port = explicit_port or (443 if scheme == "https" else 80)
    literal = f"[{host}]" if ":" in host else host
    host_header = f"{literal}:{explicit_port}" if explicit_port else literal
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookTarget(scheme, host, port, host_header, path)  # type: ignore[arg-type]


def resolve_safe(
    host: str, port: int, *, allow_private: bool, resolver: Resolver | None = None
) -> list[str]:
    """The addresses to connect to for ``host`` (deduplicated, in resolver order), after checking
    every one of them. Raises AddressNotAllowed or UnresolvableHost (both InvalidRequest)."""
    literal = _parse_ip(host)
    if literal is not None:
        addresses = [literal]
    else:
        addresses = _resolve(host, port, resolver or socket.getaddrinfo)
    for address in addresses:
        if not is_address_allowed(address, allow_private=allow_private):
            raise AddressNotAllowed(
                "webhook_url resolves to an address that is not allowed "
                "(loopback, private, link-local, metadata or reserved)"
            )
    return list(dict.fromkeys(str(a) for a in addresses))


def is_address_allowed(address: IPAddress | str, *, allow_private: bool) -> bool:
    kind = classify_address(ipaddress.ip_address(address) if isinstance(address, str) else address)
    return kind == "public" or (kind == "private" and allow_private)


def classify_address(ip: IPAddress) -> Literal["public", "private", "refused"]:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return classify_address(embedded)
        ip = ipaddress.IPv6Address(int(ip))  # drop any %zone
        if ip > _ONE and any(ip in net for net in _OPAQUE_IPV4_FORMS):  # :: and ::1 are judged below
            return "refused"
    if ip in _METADATA_ADDRESSES or ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        return "refused"
    if ip.is_loopback or any(ip in net for net in _PRIVATE_NETWORKS):
        return "private"
    # Everything else that is not globally routable (0.0.0.0/8, broadcast, reserved, documentation,
    # benchmarking, Teredo...) has no legitimate receiver.
    return "public" if ip.is_global else "refused"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        infos = resolver(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # gaierror is an OSError; bad IDNA labels raise UnicodeError
        raise UnresolvableHost() from None
    addresses = [ip for ip in (_parse_ip(str(info[4][0])) for info in infos) if ip is not None]
    if not addresses:
        raise UnresolvableHost()
    return addresses
