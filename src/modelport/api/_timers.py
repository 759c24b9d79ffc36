"""The clocks of one HTTP/1.1 connection (``api/protocol.py``): what a client may make it wait.

One timer per connection (``timer``), re-armed lazily, not one per request:

- idle: a client owing a request's headers gets the keep-alive time (uvicorn's
  ``--timeout-keep-alive``), so slow-header clients hold no slot forever;
- stall: during a request, a body that stops arriving, or a client that stops reading our
  answer, is given up after ``STALL_S`` without progress (408, or an abort); a slow app is
  never timed, only what the client owes;
- linger: an answer sent before its request's body has arrived closes in stages (FIN,
  then what the client still sends is dropped) for up to ``LINGER_IDLE_S`` of quiet or
  ``LINGER_MAX_S`` in all;
- abort: every close the protocol makes on its own becomes an abort after ``STALL_S``,
  since ``close()`` waits for unsent bytes a client that does not read never takes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from modelport.api._cycle import Cycle, plain_answer

if TYPE_CHECKING:
    from httptools import HttpRequestParser
    from uvicorn.protocols.http.flow_control import FlowControl

log = logging.getLogger("modelport.http")

# a request whose body stops arriving, or a client that stops reading our answer, is
# given up after this long without progress (checked lazily: STALL_S to STALL_S plus the
# keep-alive timeout); nginx's client_body_timeout and send_timeout play this part
STALL_S = 30.0
# An upload answered before it ended is read and dropped (``_linger``) while the client
# keeps sending: up to LINGER_IDLE_S between reads and LINGER_MAX_S in all (nginx's
# lingering_timeout and lingering_time have the same defaults).
LINGER_IDLE_S = 5.0
LINGER_MAX_S = 30.0


class Discard:
    """The parser of a lingering connection: drops what the client still sends, noting
    when it last sent something."""

    __slots__ = ("last",)

    def __init__(self, now: float) -> None:
        self.last = now

    def feed_data(self, data: bytes) -> None:
        self.last = time.monotonic()


class ConnectionTimers:
    """The timer half of ``HttpProtocol`` (a mixin: its methods are the protocol's own, so
    the request path pays no extra lookup or call). The attributes below are the
    protocol's, set in its ``__init__``."""

    transport: asyncio.Transport
    flow: FlowControl
    loop: asyncio.AbstractEventLoop
    parser: HttpRequestParser  # a Discard while lingering
    timer: asyncio.TimerHandle | None
    keep_alive_s: float
    idle_since: float | None  # waiting for a request's headers since
    watch_mark: tuple[int, int] | None  # progress at the last look (_check_idle)
    received: int  # bytes received in all
    drains: int  # resume_writing calls: the client reading our answers
    cycle: Cycle | None  # the request being parsed (or the last one)
    active: Cycle | None  # the request being answered
    in_head: bool
    stopping: bool
    half_closed: bool

    def _hang_up(self, unread: bool) -> None:
        """Close the connection: in stages (``_linger``) when the client may still be
        sending (``unread``, and it has not half-closed) and the transport can half-close
        (TLS cannot), unless the server is stopping; else at once."""
        if unread and not self.stopping and not self.half_closed and self.transport.can_write_eof():
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
        discard = Discard(started)
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
            transport.write(plain_answer(408, "The request body stopped arriving."))
        self._close()

    def _watch(self) -> None:
        """Make sure the timer runs (``_check_idle``): a request may now wait on the client."""
        if self.timer is None:
            self.timer = self.loop.call_later(self.keep_alive_s, self._check_idle)
