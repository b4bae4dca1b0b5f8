"""Refuse to fetch from the harvesting server's own networks (SSRF guard).

A harvest source URL is typed by whoever may create sources (organisation
editors, by default). Without a guard, the harvester would fetch whatever that
URL names: the cloud provider's metadata service (``169.254.169.254``), the
local Redis or Solr, an intranet server. So every request of a harvester made
through :func:`new_session` (or through a session with a :class:`GuardedAdapter`
mounted) is refused when the host resolves to an address that is not global:
loopback, private (RFC 1918, unique local), link-local (metadata services),
shared address space, multicast, reserved, unspecified, and IPv4 addresses
mapped into IPv6.

The check is made twice:

* before each request, on every address the host name resolves to (all of them
  must be allowed), and again for each redirect, since ``requests`` sends each
  hop through the adapter;
* after connecting, on the address actually connected to, which defeats a DNS
  answer that changes between the check and the connection (DNS rebinding).
  Connections through a proxy are checked before the request only (the peer is
  the proxy).

Hosts that may be fetched although they are not public are listed in
``ckan.harvest.ssrf_allowed_hosts``: host names (``.example.org`` for every
host under example.org), IP addresses or CIDR networks, separated by spaces;
``*`` allows every host (the guard is then off).
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any, Iterable, Optional, Union
from urllib.parse import urlsplit

import requests
from ckan.plugins import toolkit
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ckanext.harvest import options

log = logging.getLogger(__name__)

CONFIG_KEY = options.SSRF_ALLOWED_HOSTS
ALLOWED_SCHEMES = ("http", "https")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

__all__ = [
    "CONFIG_KEY",
    "GuardedAdapter",
    "HostNotAllowed",
    "check_url",
    "new_session",
]


class HostNotAllowed(requests.exceptions.ConnectionError):
    """A request to a host the harvesters may not fetch from."""


class _PeerNotAllowed(Exception):
    """Raised inside urllib3 (not an OSError: urllib3 must not retry it)."""

    def __init__(self, host: str, address: IPAddress, kind: str) -> None:
        super().__init__(host, address, kind)
        self.host, self.address, self.kind = host, address, kind


class _AllowList:
    """The parsed ``ckan.harvest.ssrf_allowed_hosts`` setting."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.everything = False
        self.names: set[str] = set()
        self.networks: list[Network] = []
        for entry in entries:
            self._add(entry.strip().lower().rstrip("."))

    def _add(self, entry: str) -> None:
        if not entry:
            return
        if entry == "*":
            self.everything = True
            return
        try:
            self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            self.names.add(entry)

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if self.everything or host in self.names:
            return True
        # ".example.org" allows every host under example.org
        return any(name.startswith(".") and host.endswith(name) for name in self.names)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def _allow_list() -> _AllowList:
    value = toolkit.config.get(CONFIG_KEY) or []
    if isinstance(value, str):
        value = value.split()
    return _AllowList(value)


def _kind_of(address: IPAddress) -> Optional[str]:
    """Why ``address`` may not be fetched from, or None when it is global."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return _kind_of(address.ipv4_mapped) or "an IPv4-mapped"
    checks = (
        ("loopback", address.is_loopback),
        ("link-local (metadata service)", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    )
    for kind, matches in checks:
        if matches:
            return kind
    return None


def _refusal(url: str, host: str, address: IPAddress, kind: str) -> HostNotAllowed:
    where = host if host == str(address) else "{} ({})".format(host, address)
    return HostNotAllowed(
        "Refusing to fetch {}: {} is a {} address. If this host is meant to be "
        "harvested, add it to {}".format(url, where, kind, CONFIG_KEY)
    )


def _check_address(url: str, host: str, address: IPAddress, allowed: _AllowList) -> None:
    kind = _kind_of(address)
    if kind is not None and not allowed.allows_address(address):
        raise _refusal(url, host, address, kind)


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        answers = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise requests.exceptions.ConnectionError(
            "Cannot resolve host {}: {}".format(host, exc)
        ) from exc
    # The scope id of link-local IPv6 answers ("fe80::1%eth0") is not an address.
    return [ipaddress.ip_address(str(answer[4][0]).split("%")[0]) for answer in answers]


def check_url(url: str) -> None:
    """Raise :class:`HostNotAllowed` unless ``url`` may be fetched.

    The scheme must be http or https; every address the host resolves to must
    be global or allowed by ``ckan.harvest.ssrf_allowed_hosts``.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise HostNotAllowed(
            "Refusing to fetch {}: only http and https URLs can be harvested".format(url)
        )
    host = parts.hostname or ""
    if not host:
        raise HostNotAllowed("Refusing to fetch {}: the URL has no host".format(url))
    allowed = _allow_list()
    if allowed.allows_name(host):
        return
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    for address in _resolve(host, port):
        _check_address(url, host, address, allowed)


def _check_peer(connection: HTTPConnection) -> None:
    """After connecting: refuse the connection unless its peer may be fetched."""
    if getattr(connection, "proxy", None) is not None:
        return  # the peer is the proxy; the target was checked before the request
    allowed = _allow_list()
    if allowed.allows_name(connection.host):
        return
    sock: Any = connection.sock
    peer = ipaddress.ip_address(str(sock.getpeername()[0]).split("%")[0])
    kind = _kind_of(peer)
    if kind is not None and not allowed.allows_address(peer):
        connection.close()
        raise _PeerNotAllowed(connection.host, peer, kind)


class _GuardedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _check_peer(self)


class _GuardedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _check_peer(self)


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """``requests`` transport adapter that refuses non-public hosts.

    Takes the arguments of :class:`requests.adapters.HTTPAdapter` (for example
    ``max_retries``).
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def send(self, request: requests.PreparedRequest, *args: Any,
             **kwargs: Any) -> requests.Response:
        check_url(request.url or "")
        try:
            return super().send(request, *args, **kwargs)
        except _PeerNotAllowed as exc:
            refusal = _refusal(request.url or "", exc.host, exc.address, exc.kind)
            raise HostNotAllowed(str(refusal), request=request) from None


CONNECT_TIMEOUT_OPTION = options.HTTP_CONNECT_TIMEOUT
READ_TIMEOUT_OPTION = options.HTTP_READ_TIMEOUT


def http_timeout() -> tuple[int, int]:
    """The configured (connect, read) timeouts in seconds of a remote request."""
    return (toolkit.config.get(CONNECT_TIMEOUT_OPTION),
            toolkit.config.get(READ_TIMEOUT_OPTION))


def new_session(**adapter_args: Any) -> requests.Session:
    """A ``requests`` session whose http and https requests are guarded.

    For harvesters of other extensions too::

        from ckanext.harvest.lib.netguard import http_timeout, new_session
        response = new_session().get(url, timeout=http_timeout())

    :param adapter_args: passed to :class:`GuardedAdapter` (``max_retries`` ...)
    """
    adapter = GuardedAdapter(**adapter_args)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
