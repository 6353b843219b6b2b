"""Where a webhook may send: public addresses only, unless a host is allowed by name.

The host is resolved here and the request goes to the address that was
checked (the URL's host stays in the ``Host`` header and TLS server name), so a
name cannot pass the check with one address and connect to another. A sink's
checked addresses are kept for a second (:class:`Checked`): a delivery's POSTs
follow each other faster than that, and resolving the host for each cost more
than the POST on a near receiver; a DNS change is seen, and checked, within it.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from headwater.core.errors import TerminalError, TransientError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

#: Cloud metadata services that are not caught by the ranges below on every cloud.
_METADATA = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, ...
        ipaddress.ip_address("100.100.100.200"),  # Alibaba
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not the internet


class AddressRefused(TerminalError):
    """The webhook's host resolves to an address webhooks may not reach."""


class NotResolved(TransientError):
    """The webhook's host did not resolve now (DNS may answer later)."""


@dataclass(frozen=True)
class Target:
    """A checked destination: the URL to connect to, and the host it stands for."""

    urls: tuple[str, ...]
    """The URL with each checked address in place of the host, in the resolver's order."""
    host: str
    """For the ``Host`` header: the URL's host and port."""
    hostname: str
    """For the TLS server name."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def forbidden(address: Address) -> str | None:
    """Why webhooks may not reach ``address``, or ``None`` when they may.

    >>> forbidden(ipaddress.ip_address("10.0.0.1"))
    'private'
    >>> forbidden(ipaddress.ip_address("::ffff:127.0.0.1"))
    'loopback'
    >>> forbidden(ipaddress.ip_address("2002:a9fe:a9fe::"))  # 6to4 of 169.254.169.254
    'cloud metadata'
    >>> forbidden(ipaddress.ip_address("93.184.215.14")) is None
    True
    """
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 inside IPv6 (mapped, 6to4, Teredo) is judged as the IPv4 address it reaches.
        inner = (
            address.ipv4_mapped
            or address.sixtofour
            or (address.teredo[1] if address.teredo else None)
        )
        if inner is not None:
            return forbidden(inner)
    if address in _METADATA:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (carrier-grade NAT)"
    if address.is_private or address.is_reserved or not address.is_global:
        return "private"
    return None


def check(url: str, allow_hosts: Collection[str], resolver: Resolver = resolve) -> Target:
    """Resolve ``url``'s host and return where to connect, or raise :class:`AddressRefused`."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise AddressRefused(f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise AddressRefused("webhook URLs may not carry a user or password")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = host in {h.lower() for h in allow_hosts}
    try:
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolver(host, port)]
    except OSError as exc:
        raise NotResolved(f"{host} does not resolve ({exc})") from None
    if not addresses:
        raise NotResolved(f"{host} resolves to no address")
    if not allowed:
        for address in addresses:
            reason = forbidden(address)
            if reason is not None:
                raise AddressRefused(
                    f"{host} resolves to {address}, a {reason} address; webhooks do not "
                    "reach those",
                    hint=f'if that is intended, add "{host}" to [delivery] allow_hosts',
                )
    pinned = []
    for address in addresses:
        netloc = f"[{address}]" if address.version == 6 else str(address)
        if parts.port is not None:
            netloc += f":{parts.port}"
        pinned.append(parts._replace(netloc=netloc).geturl())
    return Target(urls=tuple(pinned), host=parts.netloc, hostname=host)


#: Seconds a checked destination is used before the host is resolved and checked again.
CHECK_TTL = 1.0


class Checked:
    """:func:`check` of one URL, its answer kept for ``ttl`` seconds: the POSTs go to the
    addresses that were checked, and after ``ttl`` to those of a new check. A refusal or a
    failure to resolve is not kept: the next request checks again."""

    def __init__(
        self,
        url: str,
        allow_hosts: Collection[str],
        resolver: Resolver = resolve,
        *,
        ttl: float = CHECK_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._allow = allow_hosts
        self._resolver = resolver
        self._ttl = ttl
        self._clock = clock
        self._kept: tuple[Target, float] | None = None

    def target(self) -> Target:
        """Where to send now; raises as :func:`check` does."""
        now = self._clock()
        if self._kept is not None and now < self._kept[1]:
            return self._kept[0]
        self._kept = None
        target = check(self.url, self._allow, self._resolver)
        self._kept = (target, now + self._ttl)
        return target
