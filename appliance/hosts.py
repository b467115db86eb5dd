"""Which names and addresses the appliance's web servers answer: the DNS-rebinding Host check and the loopback check.

Shared by the admin panel and the LAN-facing display server, so the display server needs no panel code.
"""

from __future__ import annotations

import ipaddress

__all__ = ["LOCAL_SUFFIXES", "host_allowed", "is_loopback"]

LOCAL_SUFFIXES = (".local", ".lan", ".home.arpa", ".internal", ".localdomain")


def host_allowed(host_header: str | None, extra: frozenset[str] = frozenset()) -> bool:
    """Against DNS rebinding: answer to IP literals, single-label names, local suffixes and `extra` names only.

    A page on a public domain that rebinds its name to this device still sends that public name as Host.
    """
    host = (host_header or "").strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.rstrip(".")
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return "." not in host or host.endswith(LOCAL_SUFFIXES) or host in extra


def is_loopback(addr: str | None) -> bool:
    """True for a loopback client address (IPv4, IPv6, IPv4-mapped IPv6; a zone index is ignored)."""
    try:
        ip = ipaddress.ip_address((addr or "").split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback
