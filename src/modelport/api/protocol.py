"""modelport's HTTP/1.1 connection protocol, run by uvicorn's server (``http=HttpProtocol``).

uvicorn keeps what it is good at: sockets, TLS, lifespan, signals, worker processes and
graceful shutdown. This class replaces only its per-connection protocol, where most of a
small request's CPU went (docs/benchmarks.md), doing less per request:

- a response whose body comes in one ``http.response.body`` message (every JSON answer)
  leaves in **one** ``transport.write``, status line and headers included, instead of two;
- response headers come from our own app, so they are checked with two byte searches each
  (CR/LF, the response-splitting risk) rather than two regular expressions;
- ``receive()`` hands over a body that has already arrived without suspending, and a
  request allocates no ``asyncio.Event``; a waiter future is made only when the app
  really has to wait (streamed bodies, the disconnect watch);
- the keep-alive timer is one per connection, re-armed lazily, not one per request.

It also bounds what uvicorn's httptools protocol leaves open:

- the request line and headers together may be at most ``MAX_HEAD_BYTES`` in
  ``MAX_HEADERS`` fields (431 otherwise), and no more than ``_HEAD_FED_LIMIT`` bytes may
  arrive without the parser getting anywhere (a header or trailer line that never ends,
  which httptools buffers whole, or endless trailer fields);
- a chunked body's trailer fields are dropped, never merged into the request's headers
  (RFC 9110, section 6.5.1: a proxy in front may not have filtered them);
- at most ``MAX_PIPELINE`` pipelined requests wait behind the one being answered; reading
  stops while any wait or while the client does not read our answers (write
  backpressure), so a client that floods requests or never reads holds a bounded amount;
- a connection that does not finish sending a request's headers within the keep-alive
  timeout is closed (slow-header clients hold no slot forever), and so is one whose
  request body stops arriving, or whose client stops reading our answer, for ``STALL_S``;
- an HTTP/1.1 request must carry exactly one Host header (400 otherwise, RFC 9112,
  section 3.2);
- answers go out in request order: a malformed request behind others gets its 400 after
  their answers;
- an answer sent before its request's body has arrived (a 413, a 401) closes the
  connection, in stages (``_linger``), since what the client sends next is not a request.

Scope of HTTP: HTTP/1.0 and 1.1 with keep-alive, pipelining, ``Expect: 100-continue``,
chunked request and response bodies, HEAD. No WebSocket: an upgrade request is answered
as plain HTTP and the connection then closed.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl, service_unavailable
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

log = logging.getLogger("modelport.http")

HIGH_WATER = 1 << 16  # buffered request body bytes before we stop reading the socket
MAX_HEAD_BYTES = 1 << 16  # request line + headers
MAX_HEADERS = 128
# requests parsed and waiting behind the one being answered: past this, the rest of what
# the client sent waits unparsed (``_feed_slices``); reads larger than _SLICE are parsed a
# slice at a time so that the queue is checked between slices
MAX_PIPELINE = 64
_SLICE = 8192
# a request whose body stops arriving, or a client that stops reading our answer, is
# given up after this long without progress (checked lazily: STALL_S to STALL_S plus the
# keep-alive timeout); nginx's client_body_timeout and send_timeout play this part
STALL_S = 30.0
# raw bytes: MAX_HEAD_BYTES counts the URL, names and values; add the framing (": ", CRLF
# per header; method and version) so a head within the limits is never refused
_HEAD_FED_LIMIT = MAX_HEAD_BYTES + 4 * MAX_HEADERS + 1024
_ASGI = {"version": "3.0", "spec_version": "2.3"}
# ASGI extension: ``scope["extensions"][ON_DISCONNECT](callback)`` asks to have ``callback()``
# called as soon as the client goes away (``None`` withdraws it); no task has to sit in
# ``receive()`` to find out. api/fastpath.py uses it to drop queued predictions.
ON_DISCONNECT = "modelport.on_disconnect"
_DISCONNECT = {"type": "http.disconnect"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY = frozenset((204, 304))
# An upload answered before it ended is read and dropped (``_linger``) while the client
# keeps sending: up to LINGER_IDLE_S between reads and LINGER_MAX_S in all (nginx's
# lingering_timeout and lingering_time have the same defaults).
LINGER_IDLE_S = 5.0
LINGER_MAX_S = 30.0


class _Discard:
    """The parser of a lingering connection: drops what the client still sends, noting
    when it last sent something."""

    __slots__ = ("last",)

    def __init__(self, now: float) -> None:
        self.last = now

    def feed_data(self, data: bytes) -> None:
        self.last = time.monotonic()


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}


def _plain(status: int, message: str) -> bytes:
    body = message.encode()
    head = (
        f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return STATUS_LINES[status] + head.encode() + body


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests with httptools and runs each as ASGI."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        # api/direct.py: predict requests served without the ASGI chain (None: all ASGI)
        self.direct: Any = getattr(self.app, "direct", None)
        self.loop = _loop or asyncio.get_event_loop()
        self.root_path = config.root_path
        self.limit_concurrency = config.limit_concurrency
        self.keep_alive_s = float(config.timeout_keep_alive)
        self.app_state = app_state
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.access_logger = logging.getLogger("uvicorn.access")
        self.access_log = self.access_logger.hasHandlers()
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)

        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.pipeline: deque[tuple[Cycle, Any]] = deque()
        self.cycle: Cycle | None = None  # the request being parsed (or the last one)
        self.active: Cycle | None = None  # the request being answered
        self.idle_since: float | None = None  # waiting for a request's headers since
        self.timer: asyncio.TimerHandle | None = None
        # the request being parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.hosts = 0  # Host headers seen
        self.expect_continue = False
        self.declared: bytes | None = None  # the first Content-Length
        self.origin = False  # an Origin header came (a browser: CORS applies)
        self.in_head = False  # between the first byte of a request and its headers' end
        self.error: tuple[int, str] | None = None  # why a callback stopped the parser
        # bytes received in all, and the count when the parser last got somewhere (a
        # request began or ended, body bytes came): the difference is what the parser is
        # holding without progress (see data_received)
        self.received = 0
        self.progress_at = 0
        self.watch_mark: tuple[int, int] | None = None  # progress at the last look (_check_idle)
        # no more requests are read from this connection: the parser stopped (a malformed
        # request, an upgrade), and what is owed is answered first
        self.parsing_stopped = False
        self.refusal: bytes | None = None  # an error answer owed after those before it
        self.backlog = b""  # received, not parsed yet: the queue was full (_feed_slices)
        self.drains = 0  # resume_writing calls: the client reading our answers (_check_idle)
        self.starting = False  # in _start_next's loop
        self.next_due = False  # an answer completed inside that loop: go on
        self.stopping = False  # the server is shutting down (``shutdown``)

    # -- connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.connections.add(self)  # type: ignore[arg-type]  # uvicorn lists its own kinds
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        # each cycle once (the one being answered is often also the last parsed): a
        # disconnect callback must run once
        everyone = (self.active, self.cycle, *(queued for queued, _ in self.pipeline))
        for cycle in {id(cycle): cycle for cycle in everyone}.values():
            if cycle is not None:
                if not cycle.complete:
                    cycle.disconnected = True
                    if cycle.gone is not None:
                        try:
                            cycle.gone()
                        except Exception:
                            log.exception("disconnect callback failed")
                cycle.wake()
        self.pipeline.clear()
        if self.flow is not None:
            self.flow.resume_writing()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.parsing_stopped and not isinstance(self.parser, _Discard):
            return  # nothing more is read as requests here (a lingering close still counts)
        if len(data) > _SLICE or self.backlog:
            self._feed_slices(data)
        else:
            self._feed(data)

    def _feed_slices(self, data: bytes) -> None:
        """Parse a large read a slice at a time, stopping while ``MAX_PIPELINE`` requests
        wait: the rest is kept as bytes (``backlog``, no larger than one read) and parsed
        as the queue drains (``_start_next``). A parsed request costs ~40 times its bytes,
        so one read of tiny pipelined requests must not all be parsed at once; and a
        pipelining client is slowed down, not cut off."""
        if self.backlog:
            data = self.backlog + data
            self.backlog = b""
        for start in range(0, len(data), _SLICE):
            if self.parsing_stopped or self.transport.is_closing():
                return
            if len(self.pipeline) >= MAX_PIPELINE:
                self.backlog = data[start:]
                self.flow.pause_reading()
                return
            self._feed(data[start : start + _SLICE])

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # no WebSocket here: the request is served as plain HTTP, then we hang up
            # (on_headers_complete turned its keep-alive off where it could tell); what
            # follows it is not parsed
            self.parsing_stopped = True
            cycle = self.cycle
            if cycle is not None and not cycle.complete:
                cycle.keep_alive = False
                cycle.more_body = False
                cycle.wake()
        except httptools.HttpParserError:
            # httptools wraps what a callback raises, so the cause is read from our note
            status, message = self.error or (400, "Invalid HTTP request received.")
            self._reject(status, message)
        else:
            if self.received - self.progress_at > _HEAD_FED_LIMIT:
                # httptools holds a header (or trailer) line until it ends, so a line that
                # never ends, or trailer fields without end, would grow without bound:
                # whole reads that got the parser nowhere are counted here
                self._reject(*_TOO_LARGE)

    def _reject(self, status: int, message: str) -> None:
        if isinstance(self.parser, _Discard):  # lingering: our side is closed for writing
            return
        self.parsing_stopped = True
        if self.transport.is_closing():
            return
        active = self.active
        if active is not None and not active.complete:
            if active is self.cycle and active.more_body:
                # this request's own body is malformed: it cannot be served, and the
                # connection cannot go on (its answer, if begun, is cut short)
                if not active.started:
                    self.transport.write(_plain(status, message))
                self.transport.close()
                return
            # a later request: its answer goes after those owed before it (RFC 9112,
            # section 9.3.2), sent by response_complete
            self._owe_refusal(status, message)
            return
        if self.pipeline:  # the next queued request is about to start (_start_next)
            self._owe_refusal(status, message)
            return
        self.transport.write(_plain(status, message))
        self._hang_up(unread=True)  # the rest of the request may still be on its way

    def _owe_refusal(self, status: int, message: str) -> None:
        pipeline = self.pipeline
        if pipeline and pipeline[0][0] is self.cycle and self.cycle.more_body:
            # the malformed one is queued with its own body unfinished: it can never be
            # served, and the refusal answers for it
            pipeline.popleft()
        self.refusal = _plain(status, message)
        self.backlog = b""
        self.flow.pause_reading()

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        # the client is not reading our answers: read no more requests until it does,
        # and time it (_check_idle)
        self.flow.pause_writing()
        self.flow.pause_reading()
        self._watch()

    def resume_writing(self) -> None:
        self.drains += 1
        self.flow.resume_writing()
        if self._may_read():
            self.flow.resume_reading()

    def _may_read(self) -> bool:
        """Whether to read the socket once an answer is out: not while requests wait for
        theirs (parsed, or still bytes), no request can follow, the client is not reading
        our answers, or the app has not taken the body it has (``HIGH_WATER``)."""
        if self.pipeline or self.backlog or self.parsing_stopped or self.flow.write_paused:
            return False
        cycle = self.cycle
        return cycle is None or cycle.direct is not None or cycle.buffered <= HIGH_WATER

    def shutdown(self) -> None:
        """Graceful shutdown (called by uvicorn): finish the current response, then close."""
        self.stopping = True  # no lingering after the response either (``_linger``)
        cycle = self.active
        if cycle is None or cycle.complete:
            self.transport.close()
        else:
            cycle.keep_alive = False
            self.pipeline.clear()

    def _hang_up(self, unread: bool) -> None:
        """Close the connection: in stages (``_linger``) when the client may still be
        sending (``unread``) and the transport can half-close (TLS cannot), unless the
        server is stopping; else at once."""
        if unread and not self.stopping and self.transport.can_write_eof():
            self._linger()
        else:
            self._close()

    def _close(self) -> None:
        """Close, and abort if that has not happened within ``STALL_S``: close() waits for
        our unsent answer, which a client that does not read never takes."""
        self.transport.close()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(STALL_S, self.transport.abort)

    def _linger(self) -> None:
        """Close in stages (RFC 9112, section 9.6): closing with the client's upload still
        arriving would make our kernel answer it with a reset, which can erase the
        answer from the client's buffers before it reads it (a 413, say). So send FIN
        (the client reads the answer, then end of stream), drop whatever else it sends,
        and close when it does, once it has sent nothing for ``LINGER_IDLE_S``, or after
        ``LINGER_MAX_S``."""
        started = time.monotonic()
        discard = _Discard(started)
        self.parser = discard  # type: ignore[assignment]
        self.in_head = False
        if self.timer is not None:
            self.timer.cancel()
        self.transport.write_eof()
        self.flow.resume_reading()

        def check() -> None:
            now = time.monotonic()
            wait = min(discard.last + LINGER_IDLE_S, started + LINGER_MAX_S) - now
            if wait <= 0:
                self.timer = None
                self._close()
            else:
                self.timer = self.loop.call_later(wait, check)

        self.timer = self.loop.call_later(LINGER_IDLE_S, check)

    # -- keep-alive and slow clients ---------------------------------------------------

    def _idle(self) -> None:
        """From now on the client owes us a request's headers within the keep-alive time."""
        self.idle_since = self.loop.time()
        self._watch()

    def _check_idle(self) -> None:
        """The connection's one timer: a client owing a request's headers gets the
        keep-alive time; during a request, one holding it up (its body stops arriving,
        or it stops reading our answer) gets ``STALL_S`` without progress."""
        self.timer = None
        transport = self.transport
        if transport.is_closing():
            return
        writing = self.flow.write_paused  # the client is not reading our answers
        if self.idle_since is not None and not writing:
            left = self.idle_since + self.keep_alive_s - self.loop.time()
            if left <= 0:
                self._close()
            else:
                self.timer = self.loop.call_later(left, self._check_idle)
            return
        cycle = self.cycle
        reading = (  # waiting for body bytes, which the client has not been asked to hold
            self.idle_since is None
            and cycle is not None
            and cycle.more_body
            and not cycle.continue_owed
            and not self.flow.read_paused
        )
        if not (reading or writing):  # the app is at work: the client owes nothing
            self.watch_mark = None
            return
        mark = (self.received, self.drains)
        if mark != self.watch_mark:  # progress since the last look (or a first look)
            self.watch_mark = mark
            self.timer = self.loop.call_later(STALL_S, self._check_idle)
            return
        if writing:  # close() would wait for a buffer the client never drains
            log.info("closing a connection whose client stopped reading for %.0f s", STALL_S)
            transport.abort()
            return
        log.info("closing a connection whose request body stopped for %.0f s", STALL_S)
        active = self.active
        if active is not None and not active.started:
            transport.write(_plain(408, "The request body stopped arriving."))
        self._close()

    def _watch(self) -> None:
        """Make sure the timer runs (``_check_idle``): a request may now wait on the client."""
        if self.timer is None:
            self.timer = self.loop.call_later(self.keep_alive_s, self._check_idle)

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self.progress_at = self.received
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.hosts = 0
        self.expect_continue = False
        self.declared = None
        self.origin = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self.error = _TOO_LARGE
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            # a chunked body's trailer field: not merged into the headers (RFC 9110,
            # section 6.5.1); their size is bounded in data_received
            return
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES or len(self.headers) >= MAX_HEADERS:
            self.error = _TOO_LARGE
            raise _StopParsing
        name = name.lower()
        if name == b"host":
            self.hosts += 1
        elif name == b"content-length":
            if self.declared is None:
                self.declared = value
        elif name == b"origin":
            self.origin = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.idle_since = None
        parser = self.parser
        version = parser.get_http_version()
        if self.hosts != 1 and version != "1.0":
            self.error = (400, "An HTTP/1.1 request must carry exactly one Host header.")
            raise _StopParsing
        url = self.url
        if url[:1] == b"/" and b"?" not in url and b"%" not in url and b"#" not in url:
            raw_path, query = url, b""
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"),
            "root_path": self.root_path,
            "path": self.root_path + path if self.root_path else path,
            "raw_path": self.root_path.encode("ascii") + raw_path if self.root_path else raw_path,
            "query_string": query,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            log.warning("exceeded the concurrency limit (%d)", limit)
            app = service_unavailable
        # an upgrade request is answered as plain HTTP, and then we hang up (what follows
        # it is not HTTP)
        upgrade = parser.should_upgrade()
        if upgrade:  # nothing after it is read (httptools stops at its head)
            self.parsing_stopped = True
        keep_alive = version != "1.0" and parser.should_keep_alive() and not upgrade
        # HTTP/1.0 has no 100 Continue: its expectation is ignored (RFC 9110, section 10.1.1)
        expect = self.expect_continue and version != "1.0"
        previous = self.cycle
        cycle = Cycle(self, scope, keep_alive, expect)
        scope["extensions"] = {ON_DISCONNECT: cycle.on_disconnect}
        direct = self.direct
        if (
            direct is not None
            and app is self.app
            and not expect
            and direct.accepts(scope["method"], path, self.origin)
        ):
            declared = self.declared or b"0"
            # over the limit (or unreadable): the ASGI chain answers with its 413 / 400
            if declared.isdigit() and int(declared) <= direct.body_limit:
                cycle.direct = direct
        self.cycle = cycle
        if previous is None or previous.complete:
            self._start(cycle, app)
        else:  # pipelined: wait for the response in progress
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def on_body(self, body: bytes) -> None:
        self.progress_at = self.received
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.chunks.append(body)
        cycle.buffered += len(body)
        if cycle.direct is not None:
            # the direct path takes the whole body at once, so keep reading up to the
            # body limit; past it, the ASGI chain answers (413) as for any other request
            if cycle.buffered > cycle.direct.body_limit:
                cycle.direct = None
                self._start_pending(cycle)
            return
        if cycle.buffered > HIGH_WATER:
            self.flow.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        self.progress_at = self.received
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.more_body = False
        cycle.wake()
        self._start_pending(cycle)

    # -- running requests --------------------------------------------------------------

    def _start(self, cycle: Cycle, app: Any) -> None:
        self.active = cycle
        if cycle.direct is not None:
            if cycle.more_body:  # the direct path starts once the body is in
                cycle.pending = app
                return
            cycle.serve_direct(cycle.direct)
            return
        task = self.loop.create_task(cycle.run(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _start_pending(self, cycle: Cycle) -> None:
        """Start a request that was waiting for its whole body (see ``_start``)."""
        app = cycle.pending
        if app is not None and cycle is self.active:
            cycle.pending = None
            self._start(cycle, app)

    def response_complete(self, cycle: Cycle) -> None:
        self.server_state.total_requests += 1
        if not cycle.keep_alive:
            # the body, or requests we did not parse, may still be on their way
            self._hang_up(unread=cycle.more_body or self.parsing_stopped)
            return
        if self.transport.is_closing():
            return
        if self.pipeline or self.backlog:
            if self.starting:  # answered inside _start_next: its loop goes on (no recursion)
                self.next_due = True
            else:
                self._start_next()
        elif self.refusal is not None:  # a malformed request after this one
            self.transport.write(self.refusal)
            self.refusal = None
            self._hang_up(unread=True)
        else:
            if self.flow.read_paused and self._may_read():
                self.flow.resume_reading()
            self._idle()

    def _start_next(self) -> None:
        """Start the request that waited longest behind the one just answered, and parse
        what waits unparsed once there is room. A request answered at once (a 422 on the
        direct path) comes back through response_complete, which then only asks this
        loop to go on: a run of such requests takes no stack."""
        self.starting = True
        try:
            self.next_due = True
            while self.next_due and not self.transport.is_closing():
                self.next_due = False
                if self.pipeline:
                    queued, app = self.pipeline.pop()
                    self._watch()
                    self._start(queued, app)
                if self.backlog and len(self.pipeline) < MAX_PIPELINE:
                    self._feed_slices(b"")
                active = self.active
                if not self.pipeline and active is not None and active.complete:
                    self.next_due = self.backlog != b"" or self.refusal is not None
                    if self.refusal is not None:
                        self.transport.write(self.refusal)
                        self.refusal = None
                        self._hang_up(unread=True)
                        return
        finally:
            self.starting = False
        if self.transport.is_closing():
            return
        if self.flow.read_paused and self._may_read():
            # the last one parsed: its body may still be on its way
            self.flow.resume_reading()
        active = self.active
        if not self.pipeline and active is not None and active.complete:
            self._idle()  # all answered: what is left of a request head is timed


_defaults_cache: tuple[Any, bytes | None] = (None, b"")


def _rendered_defaults(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """uvicorn's default response headers as head lines, rendered and checked once per
    list (uvicorn makes a new list each second, for the date); None if a name or value
    holds a CR or LF (``--header`` values come from the command line)."""
    global _defaults_cache
    cached, block = _defaults_cache
    if headers is not cached:
        block = b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
        if block.count(b"\n") != len(headers) or block.count(b"\r") != len(headers):
            block = None
        _defaults_cache = (headers, block)
    return block


class _StopParsing(Exception):
    """Raised from a parser callback to stop parsing (the reason is in ``HttpProtocol.error``
    where an answer is owed)."""


_TOO_LARGE = (431, "Request line and headers are too large.")


class Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of that request."""

    __slots__ = (
        "buffered",
        "chunked",
        "chunks",
        "complete",
        "conn",
        "continue_owed",
        "delivered",
        "direct",
        "disconnected",
        "gone",
        "head",
        "keep_alive",
        "left",
        "more_body",
        "pending",
        "scope",
        "started",
        "waiter",
    )

    def __init__(
        self, conn: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.continue_owed = expect
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.delivered = False  # the last body chunk went to the app
        self.disconnected = False
        self.gone: Callable[[], None] | None = None  # see ON_DISCONNECT
        self.direct: Any = None  # served by api/direct.py rather than the ASGI app
        self.pending: Any = None  # the app to start once the body is in (direct path)
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.complete = False
        self.head = b""  # status line and headers, written with the first body bytes
        self.chunked = False
        self.left = 0  # body bytes still owed under Content-Length

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        self.gone = callback

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, app: Callable[..., Any]) -> None:
        try:
            await self._run(app)
        finally:
            # scope -> extensions -> on_disconnect -> this cycle -> scope is a reference
            # cycle: break it, or every request leaves garbage for the cyclic GC
            self.gone = None
            self.scope["extensions"] = None

    def serve_direct(self, direct: Any) -> None:
        """Serve through api/direct.py: the whole body in, ``respond`` called once, no task."""
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.delivered = True
        try:
            direct.start(self.scope, body, self.respond)
        except Exception:
            log.exception("unhandled error in the direct predict path")
            if not self.complete:
                self.respond(None, failed=True)

    def respond(self, answer: Any, failed: bool = False) -> None:
        """The direct path's answer (status, headers, body), or None: the client left."""
        if self.complete:
            return
        self.gone = None
        self.scope["extensions"] = None  # no reference cycle left behind (see ``run``)
        conn = self.conn
        if answer is None:
            if failed and not self.disconnected:
                conn.transport.write(_plain(500, "Internal Server Error"))
                conn.transport.close()
            return
        if self.disconnected:
            return
        status, headers, out = answer
        # The direct path's own headers never set the framing (content-length,
        # transfer-encoding, connection), so the head is built without the general scan
        # of _start_response. The server's default headers (date, server) change once a
        # second and are rendered and checked once (``_rendered_defaults``); the CR/LF
        # count still guards every name and value of this answer's own headers.
        parts: list[bytes] = []
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        own = b"".join(parts)
        lines = len(headers)
        defaults = _rendered_defaults(conn.server_state.default_headers)
        if own.count(b"\n") != lines or own.count(b"\r") != lines or defaults is None:
            log.error(
                "the direct predict path made an invalid response head: %r (default headers %r)",
                own,
                conn.server_state.default_headers,
            )
            self.respond(None, failed=True)
            return
        self.started = True
        conn.transport.write(
            b"".join(
                (
                    STATUS_LINES[status],
                    defaults,
                    own,
                    b"content-length: %d\r\n\r\n" % len(out)
                    if self.keep_alive
                    else b"content-length: %d\r\nconnection: close\r\n\r\n" % len(out),
                    out,
                )
            )
        )
        self.complete = True
        conn.response_complete(self)

    async def _run(self, app: Callable[..., Any]) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException:
            log.exception("unhandled error in the ASGI app")
            if not self.started:
                await self._send_500()
            elif not self.complete:  # the answer is cut short: the client must see that
                self.conn.transport.close()
            # (after a complete answer, e.g. Starlette re-raising behind its 500, the
            # connection and the requests queued on it go on)
            return
        if result is not None:
            log.error("the ASGI app returned %r instead of None", result)
            self.conn.transport.close()
        elif not self.started and not self.disconnected:
            log.error("the ASGI app returned without starting a response")
            await self._send_500()
        elif not self.complete and not self.disconnected:
            log.error("the ASGI app returned without completing its response")
            self.conn.transport.close()

    async def _send_500(self) -> None:
        self.keep_alive = False
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    # -- ASGI --------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.continue_owed:
            self.continue_owed = False
            if not conn.transport.is_closing():
                conn.transport.write(_CONTINUE)
        while True:
            if self.disconnected or self.complete:
                return _DISCONNECT
            if not self.delivered and (self.chunks or not self.more_body):
                chunks = self.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                more = self.more_body
                self.chunks = []
                self.buffered = 0
                self.delivered = not more
                if conn.flow.read_paused and conn._may_read():
                    conn.flow.resume_reading()
                return {"type": "http.request", "body": body, "more_body": more}
            # nothing yet (a streamed body), or the body is in: wait for the disconnect
            if self.more_body:
                conn._watch()  # time a body that stops arriving
            self.waiter = conn.loop.create_future()
            if conn.flow.read_paused and conn._may_read():
                conn.flow.resume_reading()
            await self.waiter
            self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.flow.write_paused and not self.disconnected:
            await conn.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got '{kind}'")
            self._start_response(message["status"], message.get("headers", ()))
            self.started = True  # only now: a rejected head still gets the 500 answer
            self.continue_owed = False
            return
        if self.complete:
            raise RuntimeError(f"'{kind}' sent after the response completed")
        if kind != "http.response.body":
            raise RuntimeError(f"expected 'http.response.body', got '{kind}'")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        head = self.head
        if self.scope["method"] == "HEAD":
            out = head
            self.left = 0
        elif self.chunked:
            frame = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            out = head + frame + (b"" if more else b"0\r\n\r\n")
        else:
            if self.left >= 0:  # -1: delimited by the close (see _start_response)
                self.left -= len(body)
                if self.left < 0:
                    raise RuntimeError("response body longer than its Content-Length")
            out = head + body if head else body
        self.head = b""
        if out:
            conn.transport.write(out)
        if not more:
            if self.left > 0:
                raise RuntimeError("response body shorter than its Content-Length")
            self.complete = True
            self.wake()
            conn.response_complete(self)

    def _start_response(self, status: int, headers: Any) -> None:
        conn = self.conn
        if self.more_body:
            # answered before its body is in (a 413, a 401): what the client sends next is
            # that body, or nothing if it waits for a 100 Continue, so no next request can
            # be told apart on this connection (RFC 9110, section 10.1.1)
            self.keep_alive = False
        parts = [STATUS_LINES[status]]
        lines = 2  # the status line and the blank line that ends the head
        length: int | None = None
        close = False
        for name, value in (*conn.server_state.default_headers, *headers):
            key = name.lower()
            if key == b"content-length":
                if length is None:
                    length = int(value)
            elif key == b"transfer-encoding":
                self.chunked = value.lower() == b"chunked"
            elif key == b"connection" and b"close" in value.lower():
                self.keep_alive = False
                close = True
            parts += (key, b": ", value, b"\r\n")
            lines += 1
        if not self.keep_alive and not close:
            parts.append(b"connection: close\r\n")
            lines += 1
        if length is not None and not self.chunked:
            self.left = length
        elif not self.chunked and self.scope["method"] != "HEAD" and status not in _NO_BODY:
            if self.scope["http_version"] == "1.0":
                # no chunked encoding for HTTP/1.0 (RFC 9112, section 6.1): the body ends
                # where the connection does (keep_alive is already off for 1.0)
                self.left = -1
            else:
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
                lines += 1
        parts.append(b"\r\n")
        head = b"".join(parts)
        # A CR or LF inside a name or value (response splitting) shows up as an extra one:
        # three counts over the joined head instead of a search per header.
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise RuntimeError("invalid response header: CR or LF in a name or value")
        self.head = head
        if conn.access_log:
            scope = self.scope
            query = scope["query_string"]
            target = scope["path"] + ("?" + query.decode("ascii") if query else "")
            peer = scope["client"]
            client = f"{peer[0]}:{peer[1]}" if peer else "-"
            conn.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                client,
                scope["method"],
                target,
                scope["http_version"],
                status,
            )
