"""Who the client is, by address: the socket's peer, or what trusted proxies say it was.

`X-Forwarded-For` is believed only when the connection comes from a proxy in `TRUSTED_PROXIES` (CIDRs; empty
by default, so nothing is believed). Each trusted proxy appends the address it saw, so the list is read from the
right: the first address that is not a trusted proxy is the client. Anything a client wrote further left is
ignored, and a malformed entry stops the walk at the last hop known to be genuine.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from safeharbor_common.config import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted_proxies(entries: Iterable[str]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError("TRUSTED_PROXIES must be a comma-separated list of IP networks (CIDR)") from exc
    return tuple(networks)


class ClientAddress:
    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self.trusted = trusted

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def resolve(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address for a connection from `peer` carrying `forwarded_for`."""
        if not self.trusted or not forwarded_for:
            return peer
        current = _parse(peer)
        if current is None or not self._is_trusted(current):
            return peer
        for entry in reversed(forwarded_for.split(",")):
            hop = _parse(entry.strip())
            if hop is None:
                break
            current = hop
            if not self._is_trusted(hop):
                break
        return str(current)


def rate_limit_bucket(address: str) -> str:
    """IPv6 clients are counted per /64 (one subscriber's allocation), IPv4 per address."""
    if ":" not in address:  # not IPv6: counted as it is, without parsing it on every request
        return address
    parsed = _parse(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address


def _parse(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
