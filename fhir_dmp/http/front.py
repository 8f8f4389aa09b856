"""The production front: waitress, with deadlines on request heads and bodies and FHIR error answers.

Why waitress: its asyncore loop (one thread per process) reads every request whole, head and body, before any
of its worker threads sees it, so a client that sends one byte every two seconds holds a socket and a few bytes
of buffer, never a thread. gunicorn's sync and gthread workers give the connection to a worker (thread) while the
head is still arriving (8 such clients stalled 2 workers x 4 threads); uvicorn has no deadline on receiving a
request; gunicorn's request line cannot exceed 8,190 bytes, short of the ITI-67 searches we serve.

What this module adds to waitress:
- a limit on the request line (414) separate from the header fields (431), sized for long ITI-67 URLs;
- deadlines: the head must arrive within `header_timeout` seconds of its first byte, the body within
  `body_timeout` of the head's end (408, then the connection closes); `idle_timeout` closes a keep-alive
  connection that sends nothing (waitress's channel_timeout);
- every answer the front writes itself (400, 408, 413, 414, 431, 500, 501) is an OperationOutcome, in XML
  when the request's `_format` or Accept asks for it and the head could be read;
- `--workers N`: N processes sharing one listening socket bound (and checked) before they start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import Error

from fhir_dmp.errors import FhirError
from fhir_dmp.http.negotiate import JSON, content_type_of, response_format
from fhir_dmp.http.render import serialise

log = logging.getLogger("fhir_dmp.front")


@dataclass(frozen=True)
class FrontLimits:
    """What the front accepts from a client before the application sees the request."""

    request_line: int = 32 * 1024  # bytes, method + target + version: 414 beyond
    header_fields: int = 64 * 1024  # bytes, every header line together: 431 beyond
    max_body: int = 20 * 1024 * 1024  # bytes: 413 beyond (the Content-Length, or a chunked body as it comes)
    header_timeout: float = 10.0  # seconds from a head's first byte to its end: 408 beyond
    body_timeout: float = 60.0  # seconds from the head's end to the body's end: 408 beyond
    idle_timeout: float = 30.0  # seconds a connection may stay silent between requests
    connection_limit: int = 1000  # open connections per process; past it new ones wait in the listen backlog


# -- the errors the front answers itself ---------------------------------------------------------------------


class RequestTimeout(Error):
    code = 408
    reason = "Request Timeout"


class UriTooLong(Error):
    code = 414
    reason = "URI Too Long"


_ISSUE_CODES = {400: "structure", 408: "timeout", 413: "too-costly", 414: "too-long", 431: "too-long",
                500: "exception", 501: "not-supported", 503: "transient"}


def front_error(status: int, diagnostics: str) -> FhirError:
    return FhirError.of(status, _ISSUE_CODES.get(status, "invalid"), diagnostics)


def render_error(error: FhirError, accept: str | None = None, query: str = "") -> tuple[str, bytes]:
    """(content type, body) of an error the front answers, negotiated like the application's own errors."""
    try:
        fmt = response_format(dict(parse_qsl(query)).get("_format"), accept.strip() if accept else None)
    except FhirError:
        fmt = JSON
    return content_type_of(fmt), serialise(error.outcome(), fmt)


class FhirErrorTask(ErrorTask):
    """waitress's ErrorTask writes text/plain; this one writes the OperationOutcome, then closes."""

    def execute(self) -> None:
        request = self.request
        error = request.error
        fhir = front_error(error.code, getattr(request, "diagnostics", None) or f"{error.reason}: {error.body}")
        content_type, body = render_error(fhir, request.headers.get("ACCEPT"), getattr(request, "query", "") or "")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", content_type))
        self.set_close_on_finish()
        self.channel.linger = True  # the client may still be sending what we refused: let it read the answer
        self.content_length = len(body)
        self.write(body)


# -- the parser: the request line's own limit, the head and body deadlines -----------------------------------


_RAW_ACCEPT = re.compile(rb"\nAccept[ \t]*:[ \t]*([\x20-\x7e]*)", re.IGNORECASE)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_RAW_FORMAT = re.compile(rb"[?&]_format=([\w.+/%-]+)")


class FrontParser(HTTPRequestParser):
    limits = FrontLimits()  # replaced per server (make_server)
    diagnostics: str | None = None
    raw_head = b""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.monotonic()  # the parser is made when the request's first byte arrives
        self.body_started: float | None = None

    def received(self, data: bytes) -> int:
        if not self.completed and not self.headers_finished:
            self.raw_head = self.header_plus + data  # what the head said, for the format of an error answer
            refused = self._head_too_large(self.raw_head)
            if refused is not None:
                status, diagnostics = refused
                if (status == 414 and _HEAD_END.search(self.raw_head) is None
                        and len(self.raw_head) <= self.limits.request_line + self.limits.header_fields):
                    self.header_plus = self.raw_head  # the rest of the head first: its Accept says the format
                    return len(data)
                self._fail(UriTooLong(diagnostics) if status == 414 else _HeaderFieldsTooLarge(diagnostics),
                           diagnostics)
                return len(data)
        consumed = super().received(data)
        if self.headers_finished and self.body_started is None:
            self.body_started = time.monotonic()
        if self.error is not None and self.diagnostics is None:
            self.diagnostics = _diagnostics_of(self.error, self.limits)
            self._keep_format()
        return consumed

    def _keep_format(self) -> None:
        """An error before the head was parsed: take Accept and _format from its raw bytes, if they are there."""
        if "ACCEPT" not in self.headers and (found := _RAW_ACCEPT.search(self.raw_head)):
            self.headers["ACCEPT"] = found.group(1).decode("latin-1")
        if not getattr(self, "query", "") and (found := _RAW_FORMAT.search(self.raw_head[:self.limits.request_line])):
            self.query = "_format=" + found.group(1).decode("latin-1")

    def _head_too_large(self, head: bytes) -> tuple[int, str] | None:
        head = head.lstrip(b"\r\n")  # blank lines before a request are skipped (RFC 9112 2.2)
        end = head.find(b"\n")
        line = len(head) if end < 0 else len(head[:end].rstrip(b"\r"))
        if line > self.limits.request_line:
            return 414, (f"The request line is longer than this server accepts ({self.limits.request_line} bytes); "
                         "send long searches as POST [type]/_search with a form-encoded body")
        if end >= 0:
            fields_end = head.find(b"\r\n\r\n", end - 1)
            fields = (len(head) if fields_end < 0 else fields_end) - end
            if fields > self.limits.header_fields:
                return 431, (f"The request header fields are larger than this server accepts "
                             f"({self.limits.header_fields} bytes)")
        return None

    def _fail(self, error: Error, diagnostics: str) -> None:
        """Answer `error` now, then close; what the head said of the answer's format (Accept, _format) is kept."""
        accept, query = self.headers.get("ACCEPT"), getattr(self, "query", "")
        self.headers = {}
        self.parse_header(b"GET / HTTP/1.0\r\n")
        if accept is not None:
            self.headers["ACCEPT"] = accept
        self.query = query
        self.error = error
        self.diagnostics = diagnostics
        self.completed = True
        self._keep_format()

    def expired(self, now: float) -> str | None:
        """Why this unfinished request is past its deadline, or None."""
        if self.completed:
            return None
        if self.body_started is None:
            if now - self.started > self.limits.header_timeout:
                return f"The request head did not arrive within {self.limits.header_timeout:g} s"
        elif now - self.body_started > self.limits.body_timeout:
            return f"The request body did not arrive within {self.limits.body_timeout:g} s"
        return None


class _HeaderFieldsTooLarge(Error):
    code = 431
    reason = "Request Header Fields Too Large"


def _diagnostics_of(error: Error, limits: FrontLimits) -> str:
    if error.code == 431:
        return f"The request header fields are larger than this server accepts ({limits.header_fields} bytes)"
    if error.code == 413:
        return f"The request body is larger than this server accepts ({limits.max_body} bytes)"
    if error.code == 400:
        return f"The request is not valid HTTP/1.1: {error.body}"
    return f"{error.reason}: {error.body}"


LINGER_SECONDS = 2.0


class FrontChannel(HTTPChannel):
    """waitress's channel, with a lingering close after an error answer: closing a socket whose peer is still
    sending (an over-long head, a refused body) makes the kernel send a reset, and the client loses the answer.
    So the write side is shut and what still comes is read and dropped, for LINGER_SECONDS at most."""

    parser_class = FrontParser
    error_task_class = FhirErrorTask
    linger = False  # set by the error task
    lingering_until = 0.0

    def handle_close(self) -> None:
        if self.linger and not self.lingering_until and self.connected:
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                super().handle_close()
                return
            self.lingering_until = time.monotonic() + LINGER_SECONDS
            self.will_close = self.close_when_flushed = False
            return
        super().handle_close()

    def readable(self) -> bool:
        return True if self.lingering_until else super().readable()

    def writable(self) -> bool:
        return False if self.lingering_until else super().writable()

    def handle_read(self) -> None:
        if not self.lingering_until:
            super().handle_read()
            return
        try:
            data = self.socket.recv(65536)
        except OSError:
            data = b""
        if not data or time.monotonic() > self.lingering_until:
            super().handle_close()

    def expire(self, diagnostics: str) -> None:
        """The request being received is past its deadline: queue its 408 (the connection closes after it)."""
        with self.requests_lock:
            request = self.request
            if request is None or request.completed or self.will_close or self.close_when_flushed:
                return
            version = getattr(request, "version", "1.0")
            request._fail(RequestTimeout(diagnostics), diagnostics)
            request.version = version
            self.request = None
            self.requests.append(request)
            if len(self.requests) == 1:
                self.server.add_task(self)


class FrontServer(TcpWSGIServer):
    channel_class = FrontChannel

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections (channel_timeout)
        clock = time.monotonic()
        for channel in list(self.active_channels.values()):
            if channel.lingering_until:
                if clock > channel.lingering_until:
                    HTTPChannel.handle_close(channel)
                continue
            request = channel.request
            if isinstance(request, FrontParser) and (why := request.expired(clock)):
                channel.expire(why)


def make_server(app: Callable, sock: socket.socket, limits: FrontLimits, threads: int) -> FrontServer:
    """A server on an already bound socket (serve() binds it, so a taken port is reported before anything)."""
    parser = type("BoundFrontParser", (FrontParser,), {"limits": limits})
    channel = type("BoundFrontChannel", (FrontChannel,), {"parser_class": parser})
    server_class = type("BoundFrontServer", (FrontServer,), {"channel_class": channel})
    adj = Adjustments(
        threads=threads,
        connection_limit=limits.connection_limit,
        channel_timeout=int(max(1, limits.idle_timeout)),
        cleanup_interval=1,  # the deadlines are checked every second
        max_request_header_size=limits.request_line + limits.header_fields + 4,  # our own checks come first
        max_request_body_size=limits.max_body,
        asyncore_use_poll=True,  # select() stops at 1,024 descriptors
        ident="fhir-dmp",
        expose_tracebacks=False,
        backlog=2048,
    )
    sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
    return server_class(app, map={}, _sock=sock, adj=adj, bind_socket=False, sockinfo=sockinfo)


# -- binding and processes -------------------------------------------------------------------------------------


class PortInUse(Exception):
    pass


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or PortInUse with a sentence saying so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def raise_file_limit() -> None:
    """Each slow client is a descriptor: take the hard limit on open files as the soft one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX, or not allowed
        pass


def run(app_factory: Callable[[], Callable], sock: socket.socket, limits: FrontLimits, *, workers: int,
        threads: int) -> int:
    """Serve on `sock` until SIGTERM/SIGINT: one process, or `workers` forked ones sharing the socket. The exit
    status: 0 on a requested stop, 1 when a worker died on its own."""
    raise_file_limit()
    if workers <= 1:
        return _serve_here(app_factory, sock, limits, threads)
    children: set[int] = set()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            status = 1
            try:
                status = _serve_here(app_factory, sock, limits, threads)
            finally:
                os._exit(status)
        children.add(pid)
    sock.close()
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            _kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover
            continue
        children.discard(pid)
        if not stopping:
            log.error("fhir-dmp worker %s exited (%s): stopping the others", pid, code)
            status = 1
            stop(signal.SIGTERM, None)
    return status


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _serve_here(app_factory: Callable[[], Callable], sock: socket.socket, limits: FrontLimits, threads: int) -> int:
    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)  # waitress's run() catches it and stops its threads

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = make_server(app_factory(), sock, limits, threads)
    server.run()
    return 0
