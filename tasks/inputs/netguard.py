"""Which network addresses a download of untrusted URLs may connect to (server-side request forgery).

URLs inside data (manifest rows, feed enclosures and transcripts) are written by others. Left
alone, such a URL could make the worker read its own loopback services, the intranet or the
cloud's metadata service (instance credentials) and write the answer into the outputs. So a
guarded download refuses every address that is not public: loopback, private, link-local,
shared (CGNAT), multicast, unspecified, reserved and cloud-metadata addresses, IPv4 and IPv6,
including IPv4 addresses wrapped in IPv6 (mapped, compatible, 6to4, Teredo, NAT64).

The check is made on the address actually connected to: `GuardedBackend` resolves the host
itself, checks every address it gets and connects to the checked one, so a name that resolves
to a public address at check time and a private one at connect time (DNS rebinding) cannot slip
through. httpx opens each redirect hop through the same backend, so every hop is checked.
Numeric spellings of a host (`2130706433`, `0x7f.1`, `127.1`) resolve to what they mean and
are checked as such.

Opt-ins, for intranets and tests: hosts named in `AddressPolicy.allow_hosts` (`--allow-host
HOST[:PORT]`, `AUDIOBATCH_ALLOW_HOSTS`) are exempt; `AUDIOBATCH_ALLOW_PRIVATE_URLS=1` exempts
every non-public unicast address except the cloud-metadata ones (name those explicitly).
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
import ssl
import typing
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_HOSTS_ENV = "AUDIOBATCH_ALLOW_HOSTS"
ALLOW_PRIVATE_ENV = "AUDIOBATCH_ALLOW_PRIVATE_URLS"
# Instance metadata (credentials!) of AWS/GCP/Azure/OpenStack, AWS ECS tasks, AWS over IPv6, Alibaba.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class BlockedAddress(Exception):
    """A guarded download was about to connect to an address the policy refuses."""

    def __init__(self, host: str, address: str, why: str) -> None:
        super().__init__(f"{host}, which is {why} ({address})" if host != address
                         else f"{address}, which is {why}")
        self.host, self.address, self.why = host, address, why


@dataclass(frozen=True)
class AddressPolicy:
    """What a guarded download may connect to besides public addresses."""

    allow_hosts: frozenset[str] = frozenset()  # "host" or "host:port", lower case, IPv6 without []
    allow_private: bool = False

    @classmethod
    def from_settings(cls, allow_hosts: Iterable[str] = ()) -> AddressPolicy:
        """The operator's opt-ins: `--allow-host` values plus the environment's."""
        named = [*allow_hosts, *os.environ.get(ALLOW_HOSTS_ENV, "").split(",")]
        return cls(allow_hosts=frozenset(normal_host_entry(h) for h in named if h.strip()),
                   allow_private=os.environ.get(ALLOW_PRIVATE_ENV, "").strip() == "1")

    def host_allowed(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]").rstrip(".")
        return host in self.allow_hosts or f"{host}:{port}" in self.allow_hosts

    def problem(self, address: IPAddress) -> str | None:
        """Why connecting to `address` is refused, or None when it may be used."""
        why = refusal(address)
        if why is None or (self.allow_private and why not in ("a cloud metadata address",
                                                              "multicast", "unspecified")):
            return None
        return why


def normal_host_entry(entry: str) -> str:
    """`Host:Port`, `[::1]:8080`, `host.` -> the form `host_allowed` compares with."""
    entry = entry.strip().lower()
    if entry.startswith("["):  # [v6] or [v6]:port
        host, _, rest = entry[1:].partition("]")
        return f"{host}{rest}" if rest.startswith(":") else host
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return f"{host.rstrip('.')}:{port}"
    return entry.rstrip(".")


def refusal(address: IPAddress) -> str | None:
    """Why a guarded download must not connect to `address` (None: a public address)."""
    embedded = _embedded_ipv4(address)
    if embedded is not None and (why := refusal(embedded)) is not None:
        return why
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if not address.is_global or address.is_reserved:
        return "not a public address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64, compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address check between resolving and connecting."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        if self.policy.host_allowed(host, port):
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = await _resolve(host, port)
        for address in addresses:  # one refused address refuses the name (a rebinding trick)
            if (why := self.policy.problem(address)) is not None:
                if self.policy.host_allowed(str(address), port):
                    continue
                raise BlockedAddress(host, str(address), why)
        error: Exception | None = None
        for address in addresses:  # connect to the address that was checked, not to the name
            try:
                return await self._inner.connect_tcp(str(address), port, timeout, local_address,
                                                     socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress(path, path, "a local socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    seen: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])  # drop an IPv6 zone id
        if address not in seen:
            seen.append(address)
    return seen


def guarded_transport(policy: AddressPolicy) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections obey `policy`. Environment proxies are not used
    (httpx skips them when given a transport): a proxy would connect for us, to addresses this
    check never sees."""
    context = tls_context()
    transport = httpx.AsyncHTTPTransport(verify=context)
    transport._pool = httpcore.AsyncConnectionPool(  # httpx builds its pool without a backend choice
        ssl_context=context, network_backend=GuardedBackend(policy))
    return transport


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every download: loading the CA bundle costs tens of
    milliseconds, which a feed of many short episodes would otherwise pay per file."""
    return httpx.create_ssl_context()
