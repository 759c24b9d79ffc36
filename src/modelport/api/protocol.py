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

Each request's ASGI ``receive``/``send`` and its response framing are ``Cycle``
(``api/_cycle.py``); the connection's timers (keep-alive, stalls, the staged close) are in
``api/_timers.py``.

Scope of HTTP: HTTP/1.0 and 1.1 with keep-alive, pipelining, ``Expect: 100-continue``,
chunked request and response bodies, HEAD, a client that half-closes after its requests
(answered, then closed; not over TLS). No WebSocket: an upgrade request is answered as
plain HTTP and the connection then closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl, service_unavailable
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from modelport.api._cycle import Cycle, plain_answer
from modelport.api._timers import ConnectionTimers, Discard

log = logging.getLogger("modelport.http")

HIGH_WATER = 1 << 16  # buffered request body bytes before we stop reading the socket
MAX_HEAD_BYTES = 1 << 16  # request line + headers
MAX_HEADERS = 128
# requests parsed and waiting behind the one being answered: past this, the rest of what
# the client sent waits unparsed (``_feed_slices``); reads larger than _SLICE are parsed a
# slice at a time so that the queue is checked between slices
MAX_PIPELINE = 64
_SLICE = 8192
# raw bytes: MAX_HEAD_BYTES counts the URL, names and values; add the framing (": ", CRLF
# per header; method and version) so a head within the limits is never refused
_HEAD_FED_LIMIT = MAX_HEAD_BYTES + 4 * MAX_HEADERS + 1024
_ASGI = {"version": "3.0", "spec_version": "2.3"}
# ASGI extension: ``scope["extensions"][ON_DISCONNECT](callback)`` asks to have ``callback()``
# called as soon as the client goes away, at once if it has already gone (``None``
# withdraws it); no task has to sit in ``receive()`` to find out. api/fastpath.py uses it
# to drop queued predictions.
ON_DISCONNECT = "modelport.on_disconnect"


class HttpProtocol(ConnectionTimers, asyncio.Protocol):
    """One client connection: parses requests with httptools and runs each as ASGI
    (``Cycle``, api/_cycle.py); its timers are in api/_timers.py."""

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
        # what waits behind the request being answered, newest first: (cycle, app) per
        # request, and last (None, answer) when a malformed request is refused after them
        self.pipeline: deque[tuple[Cycle | None, Any]] = deque()
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
        self.backlog = b""  # received, not parsed yet: the queue was full (_feed_slices)
        self.drains = 0  # resume_writing calls: the client reading our answers (_check_idle)
        self.starting = False  # in _start_next's loop
        self.next_due = False  # an answer completed inside that loop: go on
        self.stopping = False  # the server is shutting down (``shutdown``)
        self.half_closed = False  # the client sent all it will (``eof_received``)

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
                cycle.lost()
        self.pipeline.clear()
        if self.flow is not None:
            self.flow.resume_writing()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.parsing_stopped and not isinstance(self.parser, Discard):
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
        if isinstance(self.parser, Discard):  # lingering: our side is closed for writing
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
                    self.transport.write(plain_answer(status, message))
                self._close()
                return
            # a later request: its answer goes after those owed before it (RFC 9112,
            # section 9.3.2), queued behind them
            self._owe_refusal(status, message)
            return
        if self.pipeline:  # the next queued request is about to start (_start_next)
            self._owe_refusal(status, message)
            return
        self.transport.write(plain_answer(status, message))
        self._hang_up(unread=True)  # the rest of the request may still be on its way

    def _owe_refusal(self, status: int, message: str) -> None:
        pipeline, cycle = self.pipeline, self.cycle
        if pipeline and cycle is not None and pipeline[0][0] is cycle and cycle.more_body:
            # the malformed one is queued with its own body unfinished: it can never be
            # served, and the refusal answers for it
            pipeline.popleft()
        pipeline.appendleft((None, plain_answer(status, message)))  # sent by _start_next
        self.backlog = b""
        self.flow.pause_reading()

    def eof_received(self) -> bool:
        """The client will send nothing more: it half-closed (``shutdown(SHUT_WR)``), or
        it left (``close()``); TCP does not tell which. The request it sent whole is
        still answered, with ``connection: close``, and then the connection closes;
        unless the app watches for the client leaving (an ``ON_DISCONNECT`` callback, or
        ``receive()`` waiting after the whole body, now or later: ``Cycle``): it is told
        the client left, as before, so that work for gone clients is dropped (the predict
        path) and a wait for the disconnect does not last for ever. With no request owed
        (idle, a head or body cut short, lingering) the connection closes now, and so it
        does over TLS (the client's close_notify), where the SSL layer shuts down the
        connection whatever this returns. True keeps our side open. Reading is paused
        while requests wait behind the one being answered (parsed, or as bytes), so the
        end shows up only once the last one sent is being answered."""
        last = self.cycle
        if (
            last is None
            or self.scheme == "https"
            or last.complete
            or last.more_body  # its body can never arrive now
            or last.gone is not None  # the app watches for the client leaving
            or (last.delivered and last.waiter is not None)  # so does receive()
            or isinstance(self.parser, Discard)
            or self.transport.is_closing()
        ):
            self._close()
            return False
        self.half_closed = True  # never resume reading now (_may_read); no lingering
        last.keep_alive = False
        return True

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
        our answers, or the app has not taken the body it has (``HIGH_WATER``); never
        once the client has half-closed (a read after the end of input fails, uvloop then
        closes the transport)."""
        if (
            self.pipeline
            or self.backlog
            or self.parsing_stopped
            or self.flow.write_paused
            or self.half_closed
        ):
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
                    if queued is None:  # a malformed request's refusal (``_owe_refusal``)
                        self.transport.write(app)
                        self._hang_up(unread=True)
                        return
                    self._watch()
                    self._start(queued, app)
                if self.backlog and len(self.pipeline) < MAX_PIPELINE:
                    self._feed_slices(b"")
                active = self.active
                if not self.pipeline and active is not None and active.complete:
                    self.next_due = self.backlog != b""
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


class _StopParsing(Exception):
    """Raised from a parser callback to stop parsing (the reason is in ``HttpProtocol.error``
    where an answer is owed)."""


_TOO_LARGE = (431, "Request line and headers are too large.")
