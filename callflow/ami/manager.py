"""A small client for the Asterisk Manager Interface (AMI), on panoramisk 1.4.

panoramisk provides the wire protocol (``AMIProtocol``): it parses the ``Key: Value``
blocks into ``Message`` objects, matches answers to actions by ``ActionID`` and gathers
the events of list actions (``EventList: start`` … ``*Complete``).  Its ``Manager`` is
not used, because of what it does around that (read in panoramisk 1.4's source):

* it reconnects every 2 s, without backoff nor jitter; after a refused login it logs in
  again forever at that pace (Asterisk closes the session after each refusal, and each
  retry is a security event of the kind fail2ban bans);
* ``Manager.close()`` does not cancel a pending reconnection: a closed manager comes back;
* an action sent while disconnected is written to the dead transport and its future is
  never resolved (it is no longer in the table that would re-send it);
* its keep-alive ``Ping`` never checks for an answer, so a silent dead peer is not seen;
* it calls itself connected before the login is accepted.

So ``AmiClient`` owns the connection: one TCP connection and one ``Login`` per session;
``run()`` reconnects with jittered exponential backoff (a refused login waits at least
``login_retry``); every action is bounded by ``asyncio.wait_for``; an unanswered ``Ping``
drops the session; actions in flight fail at once with ``AmiNotConnected`` when the
connection drops.  After each login, listeners (``add_listener``) are told, so they can
resynchronise their state; events go to the callbacks given to ``on_event``.

The secret travels only in the ``Login`` action: it is never logged (panoramisk's own log
lines go through a filter that blanks it) and never shown by ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol

from callflow.ami.messages import (
    AmiActionError,
    AmiError,
    AmiList,
    AmiLoginError,
    AmiMessage,
    AmiNotConnected,
    AmiTimeout,
)
from callflow.reconnect import Backoff, Supervisor
from callflow.settings import AmiSettings
from callflow.tasks import Tasks

__all__ = ["AmiClient", "AmiConfig", "AmiList", "AmiListener", "AmiMessage", "EventCallback"]

log = logging.getLogger("callflow.ami")
_wire_log = logging.getLogger("callflow.ami.wire")


@dataclass(frozen=True)
class AmiConfig:
    """Where and how to reach AMI (``manager.conf``); ``repr`` never shows the secret.

    ``action_timeout`` bounds the TCP connection, the login and every action (a list
    action until its ``*Complete`` event).  ``events`` is the ``Events`` mask of the login
    (``system`` carries ``ContactStatus``, ``FullyBooted`` and ``Shutdown``; ``on`` for
    all).  Reconnection waits a full-jitter delay under a cap doubling from
    ``backoff_initial`` to ``backoff_max``, reset after a session that lasted
    ``stable_after`` s; a refused login waits at least ``login_retry`` s.  A ``Ping`` is
    sent every ``ping_interval`` s (``None``: never) and must be answered in time.
    """

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "callflow"
    secret: str = field(default="", repr=False)
    action_timeout: float = 5.0
    events: str = "system"
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    login_retry: float = 30.0
    ping_interval: float | None = 20.0
    stable_after: float = 10.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("AMI host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"AMI port must be 1..65535, got {self.port}")
        if not self.username:
            raise ValueError("AMI username must not be empty")
        for name in ("host", "username", "secret", "events"):
            if _has_newline(getattr(self, name)):
                raise ValueError(f"AMI {name} must not contain a line break")
        if self.action_timeout <= 0:
            raise ValueError("AMI action_timeout must be > 0")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("AMI backoff must satisfy 0 < backoff_initial <= backoff_max")
        if self.login_retry < 0:
            raise ValueError("AMI login_retry must be >= 0")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ValueError("AMI ping_interval must be > 0 (or None)")
        if self.stable_after < 0:
            raise ValueError("AMI stable_after must be >= 0")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_settings(cls, settings: AmiSettings, secret: str) -> AmiConfig:
        """The ``[ami]`` settings with the secret read by the caller (``read_secret``)."""
        return cls(
            host=settings.host,
            port=settings.port,
            username=settings.username,
            secret=secret,
            action_timeout=settings.action_timeout,
        )


def _has_newline(value: str) -> bool:
    return "\r" in value or "\n" in value


EventCallback = Callable[[AmiMessage], None]


class AmiListener(Protocol):
    """Told of each session: after each login (resynchronise here) and each drop."""

    async def ami_connected(self, ami: AmiClient) -> None: ...

    def ami_disconnected(self, ami: AmiClient, reason: str) -> None: ...


class _RedactingLog:
    """The logger given to panoramisk's protocol: the same lines, the secret blanked."""

    def __init__(self, logger: logging.Logger, secret: str) -> None:
        self._logger = logger
        self._secret = secret

    def _emit(self, level: int, msg: object, args: tuple[object, ...], exc: bool) -> None:
        if not self._logger.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        if self._secret:
            text = text.replace(self._secret, "********")
        self._logger.log(level, "%s", text, exc_info=exc)

    def debug(self, msg: object, *args: object) -> None:
        self._emit(logging.DEBUG, msg, args, False)

    def info(self, msg: object, *args: object) -> None:
        self._emit(logging.INFO, msg, args, False)

    def warning(self, msg: object, *args: object) -> None:
        self._emit(logging.WARNING, msg, args, False)

    def error(self, msg: object, *args: object) -> None:
        self._emit(logging.ERROR, msg, args, False)

    def exception(self, msg: object, *args: object) -> None:
        self._emit(logging.ERROR, msg, args, True)


class _Protocol(AMIProtocol):  # type: ignore[misc]  # panoramisk has no type hints
    """panoramisk's AMI protocol bound to one session, which plays its "factory"."""

    def __init__(self, session: _Session) -> None:
        super().__init__()
        self._session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.factory = self._session
        self.encoding = "utf8"
        self.log = self._session.wire_log

    def handle_message(self, message: Any) -> None:
        message.seq = self._session.client._next_seq()
        super().handle_message(message)


class _Session:
    """One TCP connection (and login) to AMI: what panoramisk's protocol calls back."""

    # Actions that panoramisk's ``AMIProtocol.close`` would keep for re-sending: none is
    # ever re-sent (``awaiting_actions`` is dropped), actions in flight fail instead.
    forgetable_actions = ("ping", "login", "logoff")
    save_stream = None

    def __init__(self, client: AmiClient) -> None:
        self.client = client
        self.protocol: _Protocol | None = None
        self.awaiting_actions: deque[Any] = deque()
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.inflight: set[asyncio.Future[Any]] = set()
        self.wire_log = _RedactingLog(_wire_log, client.config.secret)

    def dispatch(self, message: Any) -> None:
        self.client._dispatch(message)

    def connection_lost(self, exc: object) -> None:
        self._lost(_loss_reason(exc))

    def abort(self, reason: str) -> None:
        """Close the connection from our side."""
        protocol = self.protocol
        if protocol is not None and not protocol.closed:
            protocol.close()
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        if self.lost.done():
            return
        self.lost.set_result(reason)
        self.awaiting_actions.clear()
        for fut in list(self.inflight):
            if not fut.done():
                fut.set_exception(AmiNotConnected(f"AMI connection lost ({reason})"))
        self.client._session_lost(self, reason)


def _loss_reason(exc: object) -> str:
    if exc is None:
        return "closed by Asterisk"
    if isinstance(exc, BaseException):
        return f"connection lost: {exc}"
    # panoramisk passes the ``Shutdown`` event itself.
    get = getattr(exc, "get", None)
    restart = str(get("Restart", "")).lower() == "true" if callable(get) else False
    return "Asterisk is restarting" if restart else "Asterisk is shutting down"


class AmiClient:
    """An AMI session to Asterisk that keeps itself up.

    ``connect()`` makes one attempt (for a command-line tool); ``run()`` connects and
    reconnects until ``close()`` (for the daemon: run it as a task).  ``rng``, ``sleep``
    and ``clock`` drive the backoff and the pings and exist so tests do not wait.
    """

    def __init__(
        self,
        config: AmiConfig,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        #: Why the last attempt to connect failed (None after a login).
        self.last_error: str | None = None
        self._sleep = sleep
        self._session: _Session | None = None
        self._handlers: list[tuple[str, EventCallback]] = []
        self._listeners: list[AmiListener] = []
        self._seq = 0
        # run(): connect and log in, ping until the session drops, back off, again.
        self._supervisor = Supervisor(
            "AMI",
            self._open,
            Backoff(config.backoff_initial, config.backoff_max, rng or random.Random()),
            retry_on=(AmiError,),
            discard=self._discard,
            logger=log,
            stable_after=config.stable_after,
            on_connect_error=self._connect_failed,
            sleep=sleep,
            clock=clock,
        )
        self._tasks = Tasks("AMI", log)  # the listeners told of a login; close() ends them
        self._running = False

    def __repr__(self) -> str:
        return (
            f"AmiClient(address={self.config.address!r}, username={self.config.username!r}, "
            f"connected={self.connected})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- state and registration ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a session is logged in and its connection is up."""
        return self._session is not None and not self._session.lost.done()

    @property
    def closed(self) -> bool:
        return self._supervisor.stopped

    @property
    def reconnects(self) -> int:
        """Number of logins of ``run()`` after its first one."""
        return self._supervisor.reconnects

    def on_event(self, name: str, callback: EventCallback) -> None:
        """Call ``callback(event)`` for each event named ``name`` (any case; ``*``: all).

        Callbacks run in the order events arrive, synchronously: they must not block.  An
        exception in one is logged and does not stop the others.
        """
        self._handlers.append((name.lower(), callback))

    def add_listener(self, listener: AmiListener) -> None:
        """Tell ``listener`` of each login (``ami_connected``, run as a task) and drop."""
        self._listeners.append(listener)

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and log in once (nothing when connected).

        Raises ``AmiNotConnected`` (cannot connect, or closed), ``AmiTimeout`` or
        ``AmiLoginError``.
        """
        if self.closed:
            raise AmiNotConnected("the AMI client is closed")
        if self.connected:
            return
        session = await self._open()
        if self.closed:
            session.abort("closed")
            raise AmiNotConnected("the AMI client is closed")
        self._start(session)

    async def run(self) -> None:
        """Keep a session up until ``close()``; returns then.  Never raises ``AmiError``.

        Each failed attempt and each drop is logged and followed by a backoff delay.
        """
        if self._running:
            raise RuntimeError("AmiClient.run() is already running")
        self._running = True
        try:
            await self._supervisor.run(self._serve_session)
        finally:
            self._running = False

    async def close(self) -> None:
        """Log off, close the connection, stop ``run()``.  Safe to call more than once."""
        self._supervisor.stop()
        session = self._session
        if session is not None and not session.lost.done():
            with contextlib.suppress(AmiError):
                await self._send(
                    session, "Logoff", {}, timeout=min(1.0, self.config.action_timeout)
                )
            session.abort("closed")
        await self._tasks.aclose()

    # -- actions ---------------------------------------------------------------------------

    async def action(
        self, name: str, fields: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> AmiMessage:
        """Send action ``name`` with ``fields``; return its response.

        ``timeout`` defaults to ``config.action_timeout``.  Raises ``AmiNotConnected``
        (no session, or it dropped meanwhile), ``AmiTimeout``, or ``AmiActionError`` for
        ``Response: Error``.
        """
        raw = await self._send(self._require(name), name, _fields(fields), timeout=timeout)
        first = self._message(raw[0] if isinstance(raw, list) else raw)
        if not first.ok:
            raise AmiActionError(name, first)
        return first

    async def action_list(
        self, name: str, fields: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> AmiList:
        """Send a list action (``PJSIPShowContacts`` …); return every event up to its
        ``*Complete`` event, all within ``timeout``.  Raises like ``action``."""
        raw = await self._send(self._require(name), name, _fields(fields), timeout=timeout)
        messages = [self._message(m) for m in (raw if isinstance(raw, list) else [raw])]
        first, rest = messages[0], messages[1:]
        if not first.ok:
            raise AmiActionError(name, first)
        complete = rest[-1] if rest and rest[-1].name.lower().endswith("complete") else None
        return AmiList(first, rest[:-1] if complete else rest, complete)

    async def ping(self) -> None:
        await self.action("Ping")

    # -- internals -------------------------------------------------------------------------

    def _require(self, name: str) -> _Session:
        if self.closed:
            raise AmiNotConnected(f"AMI {name}: the client is closed")
        session = self._session
        if session is None or session.lost.done():
            raise AmiNotConnected(f"AMI {name}: not connected to {self.config.address}")
        return session

    async def _send(
        self, session: _Session, name: str, fields: Mapping[str, str], *, timeout: float | None
    ) -> Any:
        protocol = session.protocol
        if protocol is None or session.lost.done():
            raise AmiNotConnected(f"AMI {name}: not connected to {self.config.address}")
        limit = self.config.action_timeout if timeout is None else timeout
        # as_list=None: panoramisk tells a list by its "EventList: start" (its default of
        # False would treat a list answer as a single message).
        action = Action({"Action": name, **fields}, as_list=None)
        fut: asyncio.Future[Any] = protocol.send(action, as_list=None)
        session.inflight.add(fut)
        fut.add_done_callback(session.inflight.discard)
        try:
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            protocol.responses.pop(action.id, None)  # a late answer is then dropped
            raise AmiTimeout(
                f"AMI {name}: no answer from {self.config.address} within {limit:g} s"
            ) from None

    async def _open(self) -> _Session:
        cfg = self.config
        loop = asyncio.get_running_loop()
        session = _Session(self)
        try:
            async with asyncio.timeout(cfg.action_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(session), cfg.host, cfg.port
                )
        except TimeoutError:
            raise AmiTimeout(
                f"AMI {cfg.address}: no connection within {cfg.action_timeout:g} s"
            ) from None
        except OSError as exc:
            raise AmiNotConnected(
                f"AMI {cfg.address}: cannot connect: {exc.strerror or exc}"
            ) from None
        session.protocol = protocol
        login = {"Username": cfg.username, "Secret": cfg.secret, "Events": cfg.events}
        try:
            answer = self._message(await self._send(session, "Login", login, timeout=None))
        except AmiNotConnected:
            reason = session.lost.result() if session.lost.done() else "lost"
            raise AmiNotConnected(f"AMI {cfg.address}: no login ({reason})") from None
        except BaseException:
            session.abort("login not answered")
            raise
        if not answer.ok:
            message = answer.get("Message") or "refused"
            session.abort("login refused")
            raise AmiLoginError(
                f"AMI {cfg.address}: login refused for user '{cfg.username}': {message}",
                message,
            )
        return session

    def _connect_failed(self, exc: Exception, delay: float) -> float:
        """A failed attempt of ``run()``: a refused login waits at least ``login_retry``
        (each retry is a security event in Asterisk's log, the kind fail2ban bans)."""
        self.last_error = str(exc)
        if isinstance(exc, AmiLoginError):
            delay = max(self.config.login_retry, delay)
            log.error("%s; check [ami] username and secret; retrying in %.1f s", exc, delay)
        else:
            log.warning("%s; retrying in %.2f s", exc, delay)
        return delay

    @staticmethod
    async def _discard(session: _Session) -> None:
        session.abort("closed")

    async def _serve_session(self, session: _Session) -> str:
        self._start(session)
        return await self._serve(session)

    def _start(self, session: _Session) -> None:
        self._session = session
        self.last_error = None
        log.info("AMI: logged in to %s as %s", self.config.address, self.config.username)
        for listener in self._listeners:
            self._tasks.spawn(self._tell_connected(listener), "ami-connected")

    async def _tell_connected(self, listener: AmiListener) -> None:
        try:
            await listener.ami_connected(self)
        except AmiError as exc:
            log.warning("AMI: after login: %s", exc)
        except Exception:
            log.exception("AMI: a connection listener failed")

    def _session_lost(self, session: _Session, reason: str) -> None:
        if self._session is not session:
            return
        self._session = None
        log.info("AMI: session ended (%s)", reason)
        for listener in self._listeners:
            try:
                listener.ami_disconnected(self, reason)
            except Exception:
                log.exception("AMI: a connection listener failed")

    async def _serve(self, session: _Session) -> str:
        """Ping the session until it drops; return why it dropped."""
        interval = self.config.ping_interval
        while not session.lost.done():
            if interval is None:
                return await asyncio.shield(session.lost)
            pause: asyncio.Future[Any] = asyncio.ensure_future(self._sleep(interval))
            try:
                await asyncio.wait((pause, session.lost), return_when=asyncio.FIRST_COMPLETED)
            finally:
                pause.cancel()
            if session.lost.done():
                break
            try:
                await self._send(session, "Ping", {}, timeout=None)
            except AmiTimeout:
                session.abort(f"no answer to Ping within {self.config.action_timeout:g} s")
            except AmiNotConnected:
                pass
        return session.lost.result()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _message(self, raw: Any) -> AmiMessage:
        seq = raw.__dict__.get("seq", 0) if hasattr(raw, "__dict__") else 0
        return AmiMessage.of(raw, seq)

    def _dispatch(self, raw: Any) -> None:
        event = self._message(raw)
        name = event.name.lower()
        for pattern, callback in list(self._handlers):
            if pattern in ("*", name):
                try:
                    callback(event)
                except Exception:
                    log.exception("AMI: a handler of %s events failed", event.name)


def _fields(fields: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in (fields or {}).items():
        if key.lower() in ("action", "actionid"):
            raise ValueError(f"AMI field {key!r} is set by the client")
        if _has_newline(key) or _has_newline(value) or ":" in key:
            raise ValueError(f"AMI field {key!r} has a line break or a colon")
        checked[key] = value
    return checked
