"""Where a webhook may be sent: only to public addresses, unless the operator allows a network.

A caller names the URL and the worker POSTs to it, so without a check any caller could make the worker
reach what only it can reach (Redis, the object store, Prometheus, a cloud metadata service) and read
the outcome back on the video object. A destination is refused when *any* address its host resolves to
is loopback, private, link-local, multicast, reserved or otherwise not global — unless it lies in an
operator-allowed network (``HSA_WEBHOOK_ALLOWED_NETWORKS``). The gateway checks at submission (a clear
422) and the worker again at delivery, connecting only to the addresses it just checked: a name that
resolved to a public address at submission and to an internal one later (DNS rebinding) is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


def parse_networks(text: str) -> list[Network]:
    """``10.0.0.0/8, 127.0.0.1`` → networks (a bare address is a one-address network)."""
    networks = []
    for part in text.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not an IP network (e.g. 10.0.0.0/8 or 127.0.0.1)") from None
    return networks


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, whatever IPv6 says of it
    return address.is_global and not address.is_multicast


def check_address(address: str, allowed: list[Network]) -> Address:
    """``address`` as an IP address, or DestinationRefused if webhooks may not reach it."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) is link-local anyway
    if is_public(ip) or any(ip in network for network in allowed):
        return ip
    raise DestinationRefused(f"{ip} is not a public address (allow its network with HSA_WEBHOOK_ALLOWED_NETWORKS)")


def url_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("not an http(s) URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused("the port is not a number from 0 to 65535") from None
    return parts.hostname, port


def check_resolved(host: str, addresses: list[str], allowed: list[Network]) -> list[str]:
    """The resolved ``addresses`` of ``host``, each checked; refused if there are none or any is refused."""
    if not addresses:
        raise DestinationRefused(f"{host} does not resolve")
    for address in addresses:
        try:
            check_address(address, allowed)
        except DestinationRefused as refusal:
            raise DestinationRefused(f"{host} resolves to {refusal}") from None
    return addresses


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), in the resolver's order; [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))
