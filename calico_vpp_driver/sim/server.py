"""The VPP simulator's unix-socket server: VPP's socket API transport and memclnt messages.

Transport (what vpp_papi's ``vpp_transport_socket`` speaks): a stream AF_UNIX socket; every message
in either direction is a 16-byte header ``>QII`` (an unused u64, the payload length, an unused u32)
followed by the payload, whose first u16 is the message id.  A client starts with ``sockclnt_create``
(id 15, fixed) and gets ``sockclnt_create_reply`` (id 16) holding its client index and the message
table (``name_crc`` -> id for every message served: memclnt numbered from 1 as in VPP, then each
module's messages).  vpp_papi with ``bootstrapapi=True`` then fetches every definition with
``get_api_json``.  Dumps are the classic kind: the details, then the client's ``control_ping`` is
answered with ``control_ping_reply``, which ends the stream.

Served by the server itself: ``sockclnt_create``, ``sockclnt_delete`` (reply, then close),
``get_api_json``, ``control_ping``, ``memclnt_keepalive``, ``api_versions``, the ``want_*`` event
subscriptions (``want_interface_events{enable_disable, pid}``; VPP's -31 on a double (un)subscribe)
and the ``sim ...`` commands of ``cli_inband`` (see :mod:`calico_vpp_driver.sim.faults`).

Everything else goes to a handler registry, by default ``HANDLERS`` of
:mod:`calico_vpp_driver.sim.handlers`: ``handler(state, request) -> dict | list[dict]``, called with
the server's lock held.  ``request`` is the decoded message (see :mod:`calico_vpp_driver.sim.codec`
for the value forms) including ``context`` and ``client_index``.  A dict is the reply's fields
(``retval`` included; the server fills ``_vl_msg_id``, ``context`` and ``client_index``); a dump's
handler returns the list of its details' fields.  A message without a handler is answered with retval
-9 (VNET_API_ERROR_UNIMPLEMENTED), a handler that raises with -1; both are logged and recorded in
:attr:`SimServer.errors`.  ``show_version`` and other CLI commands have built-in answers when the
registry has none.

State: ``state_factory()`` builds the state handlers work on (by default
:class:`calico_vpp_driver.sim.state.VppState`); a restart replaces it with a fresh one.  Events: after
each request (and after :meth:`SimServer.mutate`), the server empties ``state.events``, a list of
``(message_name, fields)``, and sends each event to the clients subscribed to it, filling in their
``client_index`` and ``pid``.

VPP's checks kept here: a message shorter than its definition is dropped without a reply (VPP logs
"Truncated message"), and so is the reply to a request whose ``client_index`` is not the sender's
(VPP cannot route it); both are recorded in :attr:`SimServer.errors`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import struct
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

from calico_vpp_driver.sim.codec import Codec, CodecError
from calico_vpp_driver.sim.defs import ApiDefs, api_defs
from calico_vpp_driver.sim.faults import Faults, is_sim_command, run_sim_command

log = logging.getLogger("calico_vpp_driver.sim")

Handler = Callable[[Any, dict[str, Any]], "dict[str, Any] | list[dict[str, Any]]"]
T = TypeVar("T")

#: The transport's header: an unused u64, the payload length, an unused u32.
HEADER = struct.Struct(">QII")
#: VPP marks socket clients' indexes with this bit.
SOCK_API_REG_HANDLE_BIT = 0x80000000
#: Refuse payloads above this size (VPP has no fixed limit; this only guards against garbage).
MAX_MESSAGE = 256 << 20
#: Bytes asked of each recv (more when a larger message is incomplete).
_RECV_SIZE = 1 << 18

UNSPECIFIED = -1
UNIMPLEMENTED = -9
INVALID_REGISTRATION = -31

SIM_VERSION = "26.10-rc0~sim"

#: Requests answered at once even when replies are delayed.
_NEVER_DELAYED = frozenset({"sockclnt_create", "get_api_json"})


def default_handlers() -> Mapping[str, Handler]:
    """``HANDLERS`` of :mod:`calico_vpp_driver.sim.handlers`."""
    module = importlib.import_module("calico_vpp_driver.sim.handlers")
    handlers: Mapping[str, Handler] = module.HANDLERS
    return handlers


def default_state_factory() -> Callable[[], Any]:
    """:class:`calico_vpp_driver.sim.state.VppState`."""
    module = importlib.import_module("calico_vpp_driver.sim.state")
    factory: Callable[[], Any] = module.VppState
    return factory


class _Close:
    """Queue marker: close the connection once what is queued before it has been sent."""


class _Route(NamedTuple):
    """What the server needs to know of a message it receives (computed once per message)."""

    name: str
    is_reply: bool
    is_cli: bool
    never_delayed: bool
    reply: str | None
    is_dump: bool


#: The messages answering a request: (message name, fields) in sending order.
Replies = list[tuple[str, dict[str, Any]]]
#: What to do once the replies are sent: an action, closing the connection, or nothing.
After = Callable[[], None] | _Close | None
_Builtin = Callable[["Connection", dict[str, Any], str], tuple[Replies, After]]


class Connection:
    """One client: a reader thread that reads, executes and answers, and a writer thread for the rest.

    The reader receives in large chunks, splits them into messages, dispatches each (decode,
    handler, encode) and then sends every reply of the chunk with one non-blocking ``send``.  What
    cannot go out that way goes through the writer thread, in order with everything else: what
    the socket did not take (the client is slow to read: the reader goes on reading, as VPP
    does), replies held back by :meth:`SimServer.delay_replies`, actions to run once what precedes
    them has been sent (closing, a ``sim`` command's restart), and messages queued by other
    threads (events) while the reader is not in the middle of a chunk.  Every message leaves in
    the order it was queued.
    """

    def __init__(self, server: SimServer, sock: socket.socket, index: int) -> None:
        self.server = server
        self.sock = sock
        self.index = index
        self.name = ""
        #: want_* request name -> the pid the client registered with
        self.subscriptions: dict[str, int] = {}
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        #: What is to go out, in order: (not before this time.monotonic(), frame(s) | action | close).
        self._out: list[tuple[float, bytes | Callable[[], None] | _Close]] = []
        #: Items of ``_out`` only the writer can handle (a time to wait for, an action, a close).
        self._special = 0
        #: The reader or the writer is sending items taken from ``_out`` (the other keeps off).
        self._sending = False
        #: The reader is dispatching a chunk's messages; it sends what they queued at the end.
        self._in_chunk = False
        self._reader = threading.Thread(target=self._read_loop, name=f"vpp-sim-rx-{index:x}", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"vpp-sim-tx-{index:x}", daemon=True)

    def start(self) -> None:
        self._reader.start()
        self._writer.start()

    def send(self, payload: bytes, at: float = 0.0) -> None:
        """Queue a message, to go no earlier than time.monotonic() ``at``."""
        self._queue(at, payload)

    def after_queued(self, action: Callable[[], None] | _Close, at: float = 0.0) -> None:
        """Run ``action`` (or close) in the writer once everything queued so far is sent."""
        self._queue(at, action)

    def _queue(self, at: float, what: bytes | Callable[[], None] | _Close) -> None:
        if type(what) is bytes:
            what = HEADER.pack(0, len(what), 0) + what
        with self._lock:
            if self.closed.is_set():
                return
            self._out.append((at, what))
            if at or type(what) is not bytes:
                self._special += 1
            if not self._in_chunk:  # else the reader sends it (or wakes the writer) after the chunk
                self._wake.notify()

    def close(self) -> None:
        """Close the socket now (the peer sees EOF); both threads end on their own."""
        if self.closed.is_set():
            return
        self.closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._wake.notify_all()
        self.server._forget(self)

    def join(self, timeout: float) -> None:
        for t in (self._reader, self._writer):
            if t is not threading.current_thread() and t.ident is not None:
                t.join(timeout)

    # -- reading -----------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self.sock
        unpack_from = HEADER.unpack_from
        hsize = HEADER.size
        parts: list[bytes] = []  # received, not yet split into messages
        have = 0
        need = hsize  # bytes to have before splitting is worth trying (a whole frame)
        try:
            while not self.closed.is_set():
                try:
                    chunk = sock.recv(max(_RECV_SIZE, need - have))
                except OSError:
                    break
                if not chunk:
                    break
                parts.append(chunk)
                have += len(chunk)
                if have < need:
                    continue
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                payloads: list[bytes] = []
                pos = 0
                need = hsize
                while have - pos >= hsize:
                    length = unpack_from(data, pos)[1]
                    if length > MAX_MESSAGE:
                        self._run(payloads)  # the messages before it
                        self.server._error(f"client {self.index:#x}: message of {length} bytes, closing")
                        return
                    end = pos + hsize + length
                    if end > have:
                        need = hsize + length
                        break
                    payloads.append(data[pos + hsize : end])
                    pos = end
                rest = data[pos:]
                parts = [rest] if rest else []
                have = len(rest)
                if payloads:
                    self._run(payloads)
        except OSError:  # sending the replies failed: the client is gone
            pass
        except Exception:  # a bug in the simulator: keep serving the others
            self.server._error(f"client {self.index:#x}: reader failed\n{traceback.format_exc()}")
        finally:
            self.close()

    def _run(self, payloads: list[bytes]) -> None:
        """Dispatch a chunk's messages, then send what they queued."""
        with self._lock:
            self._in_chunk = True
        try:
            dispatch = self.server._dispatch
            for payload in payloads:
                dispatch(self, payload)
        finally:
            self._flush()

    def _flush(self) -> None:
        """Send what is queued, as far as the socket takes it at once; the writer does the rest
        (and everything when it has to wait, act, or is sending already)."""
        with self._lock:
            self._in_chunk = False
            if not self._out:
                return
            if self._sending or self._special:
                self._wake.notify()
                return
            items, self._out = self._out, []
            self._sending = True
        frames = [what for _, what in items if type(what) is bytes]  # all of them: nothing special
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        sent = len(data)
        try:
            if not self.closed.is_set():
                sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        finally:
            with self._lock:
                self._sending = False
                if sent < len(data):
                    self._out.insert(0, (0.0, data[sent:]))
                if self._out:
                    self._wake.notify()

    # -- writing -----------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self.closed.is_set() and (self._sending or not self._out):
                        self._wake.wait()
                    if self.closed.is_set():
                        break
                    items, self._out = self._out, []
                    self._special = 0
                    self._sending = True
                try:
                    done = self._write(items)
                finally:
                    with self._lock:
                        self._sending = False
                if done:
                    break
        except OSError:
            pass
        finally:
            self.close()
            with contextlib.suppress(OSError):
                self.sock.close()

    def _write(self, items: list[tuple[float, bytes | Callable[[], None] | _Close]]) -> bool:
        """Send (and do) ``items`` in order, each when its time comes; True once closing."""
        ready: list[bytes] = []
        for at, what in items:
            if at:
                wait = at - time.monotonic()
                if wait > 0:
                    self._send_now(ready)
                    if self.closed.wait(wait):
                        return True
            if type(what) is bytes:
                ready.append(what)
                continue
            self._send_now(ready)
            if isinstance(what, _Close):
                return True
            what()  # type: ignore[operator]  # an action
        self._send_now(ready)
        return self.closed.is_set()

    def _send_now(self, ready: list[bytes]) -> None:
        if ready:
            if self.closed.is_set():
                raise OSError("connection closed")
            self.sock.sendall(ready[0] if len(ready) == 1 else b"".join(ready))
            ready.clear()


class SimServer:
    """A simulated VPP API server on a unix socket.

    ``SimServer(path, state_factory, handlers).start()`` serves in background threads until
    :meth:`stop` (also a context manager).  ``state_factory`` and ``handlers`` default to the
    simulator's own (:func:`default_state_factory`, :func:`default_handlers`).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        state_factory: Callable[[], Any] | None = None,
        handlers: Mapping[str, Handler] | None = None,
        *,
        defs: ApiDefs | None = None,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.state_factory = state_factory if state_factory is not None else default_state_factory()
        self.handlers: Mapping[str, Handler] = handlers if handlers is not None else default_handlers()
        self.defs = defs if defs is not None else api_defs()
        self.codec = Codec(self.defs)
        self.faults = Faults()
        #: Held while a handler runs and while the state is replaced; take it to read the state.
        self.lock = threading.RLock()
        self.state: Any = self.state_factory()
        #: Protocol errors and handler failures, for tests to assert on.
        self.errors: list[str] = []
        self.calls: Counter[str] = Counter()
        #: Called under the lock after each request changed (or not) the state: name, request.
        #: Tests use it to check an invariant after every single API message.
        self.after_request: Callable[[str, Mapping[str, Any]], None] | None = None
        self.msg_ids: dict[str, int] = {}
        self.msg_names: dict[int, str] = {}
        for i, name in enumerate(self.defs.messages, start=1):
            self.msg_ids[name] = i
            self.msg_names[i] = name
        self._table = [
            {"index": self.msg_ids[name], "name": msg.name_crc} for name, msg in self.defs.messages.items()
        ]
        self._routes = {i: self._route(name) for i, name in self.msg_names.items()}
        self._api_json = self.defs.api_json()
        self._events_by_name = self.defs.event_subscriptions()
        self._reply_routes: dict[str, tuple[int, bool]] = {}
        self._conns: dict[int, Connection] = {}
        self._conns_lock = threading.Lock()
        self._next_client = 1
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._relisten: threading.Timer | None = None
        self._builtins: dict[str, _Builtin] = {
            "sockclnt_create": self._sockclnt_create,
            "sockclnt_delete": self._sockclnt_delete,
            "get_api_json": self._get_api_json,
            "control_ping": self._control_ping,
            "memclnt_keepalive": self._keepalive,
            "api_versions": self._api_versions,
            "want_interface_events": self._want_events,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        self._stopping.clear()
        self._listen()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._relisten is not None:
            self._relisten.cancel()
        self._unlisten()
        conns = self._connections()
        for conn in conns:
            conn.close()
        for conn in conns:
            conn.join(2.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait_listening(self, timeout: float | None = None) -> bool:
        """Wait until the socket accepts connections (e.g. at the end of a restart's downtime)."""
        return self._listening.wait(timeout)

    def _listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.socket_path)
        sock.listen(64)
        sock.settimeout(0.1)
        self._listener = sock
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(sock,), name="vpp-sim-accept", daemon=True
        )
        self._accept_thread.start()
        self._listening.set()

    def _unlisten(self) -> None:
        self._listening.clear()
        sock, self._listener = self._listener, None
        if sock is not None:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        thread, self._accept_thread = self._accept_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    def _accept_loop(self, sock: socket.socket) -> None:
        while self._listener is sock:
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            client.settimeout(None)
            with self._conns_lock:
                index = SOCK_API_REG_HANDLE_BIT | self._next_client
                self._next_client += 1
                conn = Connection(self, client, index)
                self._conns[index] = conn
            conn.start()

    def _connections(self) -> list[Connection]:
        with self._conns_lock:
            return list(self._conns.values())

    def _forget(self, conn: Connection) -> None:
        with self._conns_lock:
            gone = self._conns.pop(conn.index, None) is conn
        forget_client = getattr(self.state, "forget_client", None)
        if gone and callable(forget_client):  # VPP's API reaper, for a state that keeps clients
            with self.lock:
                forget_client(conn.index)

    @property
    def client_count(self) -> int:
        """Connected clients."""
        return len(self._connections())

    def client_names(self) -> list[str]:
        """The names clients gave in ``sockclnt_create``."""
        return [c.name for c in self._connections()]

    # -- faults ----------------------------------------------------------------------------------

    def fail_nth(self, message: str, n: int = 1, retval: int = -1, times: int = 1) -> None:
        """Answer the n-th call of ``message`` from now on with ``retval`` (see faults module)."""
        if message not in self.defs.messages:
            raise KeyError(f"no message {message!r}")
        self.faults.fail_nth(message, n, retval, times)

    def delay_replies(self, seconds: float) -> None:
        """Send every reply ``seconds`` after its request arrived (0: no delay)."""
        self.faults.delay_replies(seconds)

    def clear_faults(self) -> None:
        self.faults.clear()

    def drop_connections(self) -> None:
        """Close every client connection; the state is kept."""
        for conn in self._connections():
            conn.close()

    def restart(self, downtime: float = 0.0) -> None:
        """Drop every connection and start over with a fresh state, as a restarted VPP.

        With a ``downtime``, the socket is gone for that long (returns at once; see
        :meth:`wait_listening`).
        """
        with self.lock:
            if downtime > 0:
                self._unlisten()
            self.drop_connections()
            self.state = self.state_factory()
            with self._conns_lock:
                self._next_client = 1
            if downtime > 0 and not self._stopping.is_set():
                self._relisten = threading.Timer(downtime, self._relisten_now)
                self._relisten.daemon = True
                self._relisten.start()

    def _relisten_now(self) -> None:
        if not self._stopping.is_set():
            self._listen()

    def call_counts(self) -> dict[str, int]:
        """Requests received per message name."""
        with self.lock:
            return dict(self.calls)

    # -- state and events ------------------------------------------------------------------------

    def mutate(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(state)`` under the lock, then deliver the events it queued."""
        with self.lock:
            result = fn(self.state)
            self._deliver_events()
        return result

    def emit_event(self, name: str, fields: Mapping[str, Any]) -> None:
        """Send an event (e.g. ``sw_interface_event``) to its subscribers."""
        with self.lock:
            self._send_event(name, dict(fields))

    def _deliver_events(self) -> None:
        events = getattr(self.state, "events", None)
        if not events:
            return
        pending = list(events)
        events.clear()
        for name, fields in pending:
            self._send_event(name, dict(fields))

    def _send_event(self, name: str, fields: dict[str, Any]) -> None:
        want = self._events_by_name.get(name)
        if want is None:
            self._error(f"event {name!r} is not an event message")
            return
        # An event naming a client goes to that client only; otherwise to every subscriber.
        target = int(fields.get("client_index") or 0)
        for conn in self._connections():
            pid = conn.subscriptions.get(want)
            if pid is None or (target and conn.index != target):
                continue
            msg = {**fields, "client_index": conn.index, "pid": pid}
            try:
                conn.send(self.codec.encode(name, msg, self.msg_ids[name]))
            except CodecError as e:
                self._error(f"event {name}: {e}")
                return

    # -- requests --------------------------------------------------------------------------------

    def _error(self, text: str) -> None:
        log.warning("vpp-sim: %s", text)
        self.errors.append(text)

    def _route(self, name: str) -> _Route:
        reply = self.defs.reply_of(name)
        return _Route(
            name,
            name.endswith("_reply"),  # e.g. memclnt_keepalive_reply: nothing to answer
            name == "cli_inband",
            name in _NEVER_DELAYED,
            reply,
            self.defs.is_dump(name),
        )

    def _reply_route(self, reply_name: str) -> tuple[int, bool]:
        """The message id of ``reply_name`` and whether it has a ``client_index``."""
        route = self._reply_routes.get(reply_name)
        if route is None:
            names = self.defs.messages[reply_name].field_names()
            route = self._reply_routes[reply_name] = (self.msg_ids[reply_name], "client_index" in names)
        return route

    def _dispatch(self, conn: Connection, payload: bytes) -> None:
        if len(payload) < 2:
            self._error(f"client {conn.index:#x}: message shorter than its id")
            return
        msg_id = (payload[0] << 8) | payload[1]
        route = self._routes.get(msg_id)
        if route is None:
            self._error(f"client {conn.index:#x}: no message with id {msg_id}; dropped")
            return
        name = route.name
        try:
            request = self.codec.decode(name, payload)
        except CodecError as e:
            self._error(f"client {conn.index:#x}: truncated {name} dropped ({e})")
            return
        request.pop("_vl_msg_id", None)
        if route.is_reply:
            return
        received = time.monotonic()
        sim_cli = route.is_cli and is_sim_command(str(request.get("cmd", "")))
        with self.lock:
            self.calls[name] += 1
            replies, after = self._execute(conn, route, request, sim_cli)
            if self.after_request is not None:
                try:
                    self.after_request(name, request)
                except Exception:
                    self._error(f"after_request hook failed on {name}:\n{traceback.format_exc()}")
            delay = self.faults.delay
            at = received + delay if delay and not sim_cli and not route.never_delayed else 0.0
            routable = request.get("client_index", conn.index) == conn.index or name == "sockclnt_create"
            if not routable:
                self._error(
                    f"{name} from client {conn.index:#x} names client_index {request.get('client_index'):#x};"
                    " VPP cannot route the reply, none sent"
                )
            context = request.get("context", 0)
            for reply_name, fields in replies if routable else ():
                fields["context"] = context
                reply_id, has_client_index = self._reply_route(reply_name)
                if has_client_index:
                    fields.setdefault("client_index", conn.index)
                try:
                    conn.send(self.codec.encode(reply_name, fields, reply_id), at)
                except CodecError as e:
                    self._error(f"{name}: bad reply {reply_name} {fields!r}: {e}")
                    if not route.is_dump:
                        conn.send(self._failure(reply_name, request, UNSPECIFIED), at)
            if after is not None:
                conn.after_queued(after)
            self._deliver_events()

    def _failure(self, reply_name: str, request: Mapping[str, Any], retval: int) -> bytes:
        fields = {"context": request.get("context", 0), **_retval(self.defs, reply_name, retval)}
        return self.codec.encode(reply_name, fields, self.msg_ids[reply_name])

    def _execute(
        self, conn: Connection, route: _Route, request: dict[str, Any], sim_cli: bool
    ) -> tuple[Replies, After]:
        """Run a request; its reply messages and what to do after sending them."""
        name, reply, dump = route.name, route.reply, route.is_dump
        if reply is None:  # a message VPP does not answer
            return [], None
        if sim_cli:
            cli = run_sim_command(self, str(request["cmd"]))
            return [(reply, {"retval": cli.retval, "reply": cli.reply})], cli.after_reply
        failure = self.faults.on_request(name)
        if failure is not None:
            log.info("vpp-sim: injected failure of %s with %d", name, failure)
            return ([] if dump else [(reply, _retval(self.defs, reply, failure))]), None
        builtin = self._builtins.get(name)
        if builtin is not None:
            return builtin(conn, request, reply)
        handler = self.handlers.get(name)
        if handler is None:
            fallback = _FALLBACKS.get(name)
            if fallback is not None:
                return [(reply, fallback(request))], None
            self._error(f"no handler for {name}")
            return ([] if dump else [(reply, _retval(self.defs, reply, UNIMPLEMENTED))]), None
        state = self.state
        try:
            result = handler(state, request)
        except Exception:
            self._error(f"handler for {name} failed:\n{traceback.format_exc()}")
            return ([] if dump else [(reply, _retval(self.defs, reply, UNSPECIFIED))]), None
        finally:
            hazards = getattr(state, "hazards", None) or []
            for hazard in hazards:
                self._error(f"{name}: VPP accepts this but is left broken: {hazard}")
            hazards.clear()
        if dump:
            if not isinstance(result, list):
                self._error(f"handler for dump {name} returned {type(result).__name__}, not a list")
                return [], None
            return [(reply, dict(d)) for d in result], None
        if not isinstance(result, Mapping):
            self._error(f"handler for {name} returned {type(result).__name__}, not a dict")
            return [(reply, _retval(self.defs, reply, UNSPECIFIED))], None
        return [(reply, dict(result))], None

    # -- messages the server answers itself ------------------------------------------------------

    def _sockclnt_create(self, conn: Connection, request: dict[str, Any], reply: str) -> tuple[Replies, None]:
        conn.name = str(request.get("name", ""))
        fields = {
            "client_index": 0,
            "response": 0,
            "index": conn.index,
            "count": len(self._table),
            "message_table": self._table,
        }
        return [(reply, fields)], None

    def _sockclnt_delete(
        self, conn: Connection, request: dict[str, Any], reply: str
    ) -> tuple[Replies, _Close]:
        # VPP answers 1 (sic) and closes the client's socket.
        return [(reply, {"response": 1})], _Close()

    def _get_api_json(self, conn: Connection, request: dict[str, Any], reply: str) -> tuple[Replies, None]:
        return [(reply, {"retval": 0, "json": self._api_json})], None

    def _control_ping(self, conn: Connection, request: dict[str, Any], reply: str) -> tuple[Replies, None]:
        fields = {"retval": 0, "client_index": request.get("client_index", 0), "vpe_pid": os.getpid()}
        return [(reply, fields)], None

    def _keepalive(self, conn: Connection, request: dict[str, Any], reply: str) -> tuple[Replies, None]:
        return [(reply, {"retval": 0})], None

    def _api_versions(self, conn: Connection, request: dict[str, Any], reply: str) -> tuple[Replies, None]:
        versions = []
        for mod in self.defs.modules:
            major, minor, patch = (int(x) for x in mod.version.split("."))
            versions.append({"major": major, "minor": minor, "patch": patch, "name": f"{mod.name}.api"})
        return [(reply, {"retval": 0, "count": len(versions), "api_versions": versions})], None

    def _want_events(self, conn: Connection, request: dict[str, Any], reply: str) -> tuple[Replies, None]:
        name = next(n for n, r in self.defs.services.items() if r["reply"] == reply)
        enable = bool(request.get("enable_disable"))
        if enable == (name in conn.subscriptions):
            return [(reply, {"retval": INVALID_REGISTRATION})], None
        if enable:
            conn.subscriptions[name] = int(request.get("pid", 0))
        else:
            del conn.subscriptions[name]
        return [(reply, {"retval": 0})], None


def _retval(defs: ApiDefs, reply: str, retval: int) -> dict[str, Any]:
    """The fields of a failed ``reply``: its ``retval`` (``response`` in memclnt), if it has one."""
    names = defs.messages[reply].field_names()
    for field in ("retval", "response"):
        if field in names:
            return {field: retval}
    return {}  # e.g. npol_get_version_reply: VPP's reply cannot say it failed


def _show_version(request: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "retval": 0,
        "program": "vpe",
        "version": SIM_VERSION,
        "build_date": "simulated",
        "build_directory": "calico_vpp_driver.sim",
    }


def _cli(request: Mapping[str, Any]) -> dict[str, Any]:
    cmd = " ".join(str(request.get("cmd", "")).split())
    if cmd in ("show version", "sh ver", "show ver"):
        return {"retval": 0, "reply": f"vpp v{SIM_VERSION} (calico_vpp_driver simulator)\n"}
    return {"retval": 0, "reply": f"unknown input `{cmd}'\n"}


#: Answers used when the handler registry has none for these.
_FALLBACKS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "show_version": _show_version,
    "cli_inband": _cli,
}
