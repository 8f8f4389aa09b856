"""The HTTP client the delivery worker calls endpoints with (docs/subscriptions.md, "Endpoints"): whatever a
subscription's owner put in its endpoint, the server must not be made to call its own network, nor be held by a
receiver.

- **Addresses.** An endpoint allowed by a prefix naming its host (`http://127.0.0.1` in
  FHIR_DMP_SUBSCRIPTION_ENDPOINTS) may be any address: the operator named it. One allowed only by a scheme
  (`https://`, the default) must be a public address: a host written as a loopback, private, link-local or reserved
  IP (in any of the forms the resolver takes: `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`) is refused at
  creation, and a name is checked where it matters, on the socket connected (the peer's address, after DNS):
  a name resolving to 127.0.0.1, or rebinding to it between a check and the connection, reaches nothing.
- **Time.** The whole exchange (connection, TLS, sending, the answer's head) ends within its deadline, whatever
  the receiver trickles: a watchdog shuts the socket down. The answer's body is never read.
- **What the owner is told.** A failure is said in one of a few words (`Subscription.error`, `$status`): never the
  resolver's, the socket's or the TLS library's own message, which would make the subscription a port scanner.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)
UNREACHABLE = "the endpoint could not be reached (no connection, no TLS, or no answer in time)"


@dataclass(frozen=True)
class Sent:
    ok: bool
    error: str | None = None


def _prefixes(prefixes: str | None) -> list[str]:
    return [p.strip() for p in (prefixes or "https://").split(",") if p.strip()]


def matches(endpoint: str, prefix: str) -> bool:
    """`endpoint` starts with `prefix` up to a boundary of the URL (`http://127.0.0.1` is not
    `http://127.0.0.1.evil.example`)."""
    return endpoint == prefix or (endpoint.startswith(prefix) and (prefix.endswith(("/", "://"))
                                                                   or endpoint[len(prefix)] in "/:?#"))


def operator_named(endpoint: str, prefixes: str | None) -> bool:
    """Whether a prefix of FHIR_DMP_SUBSCRIPTION_ENDPOINTS naming a host (not only a scheme) allows the endpoint:
    the operator's choice, any address."""
    for prefix in _prefixes(prefixes):
        try:
            host = urlsplit(prefix).hostname
        except ValueError:
            continue
        if host and matches(endpoint, prefix):
            return True
    return False


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host written as an IP stands for, in every form the system resolver accepts (dotted, decimal,
    octal, hex, short: `inet_aton`'s), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global unicast address (an IPv4-mapped IPv6 one judged as its IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def address_refusal(endpoint: str, prefixes: str | None) -> str | None:
    """Why an endpoint may not be called for its host as written (None: it may): an IP that is not public, unless
    a prefix names that host."""
    if operator_named(endpoint, prefixes):
        return None
    host = (urlsplit(endpoint).hostname or "").lower()
    found = literal_address(host)
    if found is not None and not public(found):
        return f"{host} is not a public address (FHIR_DMP_SUBSCRIPTION_ENDPOINTS may name it)"
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine (FHIR_DMP_SUBSCRIPTION_ENDPOINTS may name it)"
    return None


class _Call(threading.local):
    """The sockets this thread's exchange opened (duplicates: shutting one down ends the connection, even when TLS
    wrapped the original), and whether their peer may be any address."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.any_address = False


_CALL = _Call()


class Refused(OSError):
    """The peer's address is not one the endpoint may have."""


def _guard(sock: socket.socket) -> socket.socket:
    peer = ipaddress.ip_address(sock.getpeername()[0].split("%")[0])
    if not _CALL.any_address and not public(peer):
        sock.close()
        raise Refused(f"the peer {peer} is not a public address")
    _CALL.sockets.append(sock.dup())
    return sock


class _HTTP(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guard(super()._new_conn())


class _HTTPS(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guard(super()._new_conn())


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTP


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPS


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def post(endpoint: str, body: bytes, headers: dict[str, str], timeout: float, prefixes: str | None) -> Sent:
    """POST `body`; 2xx is taken. No redirect is followed (the endpoint was allowed, where it points to was not),
    no proxy or .netrc of the environment is used, the answer's body is never read, and the whole exchange ends
    within 2 x `timeout` (the connection's, then the answer's)."""
    refusal = address_refusal(endpoint, prefixes)
    if refusal is not None:
        log.warning("subscription endpoint %s refused: %s", endpoint, refusal)
        return Sent(False, UNREACHABLE)
    _CALL.sockets, _CALL.any_address = [], operator_named(endpoint, prefixes)
    opened = _CALL.sockets
    watchdog = threading.Timer(2 * timeout, _shut, (opened,))
    watchdog.daemon = True
    watchdog.start()
    try:
        with requests.Session() as http:
            http.trust_env = False
            http.mount("http://", _Adapter())
            http.mount("https://", _Adapter())
            with http.post(endpoint, data=body, timeout=timeout, stream=True, allow_redirects=False,
                           headers=headers) as answer:
                status = answer.status_code
    except (requests.RequestException, OSError, ValueError) as exc:
        log.warning("subscription endpoint %s: %s: %s", endpoint, type(exc).__name__, str(exc)[:300])
        return Sent(False, UNREACHABLE)
    finally:
        watchdog.cancel()
        for sock in opened:
            sock.close()
    if 200 <= status < 300:
        return Sent(True)
    return Sent(False, f"the endpoint answered {status}")


def _shut(sockets: list[socket.socket]) -> None:
    for sock in list(sockets):
        with contextlib.suppress(OSError):  # closed already: the exchange ended meanwhile
            sock.shutdown(socket.SHUT_RDWR)
