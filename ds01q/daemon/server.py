"""`ds01q server`: the Unix-socket front of the daemon. Each caller's identity comes
from the kernel (SO_PEERCRED); the socket itself is world-connectable (0666)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import socketserver
import threading
from typing import TYPE_CHECKING, Any, Callable

from ds01q import protocol
from ds01q.daemon import identity
from ds01q.daemon.gpuwatch import start_gpu_watch
from ds01q.daemon.janitor import Janitor
from ds01q.daemon.limits import ConnectionLimiter
from ds01q.daemon.relay import attach as relay
from ds01q.errors import Ds01qError, RequestError
from ds01q.services import Caller, Context, accounting, audit, holds, jobs, mig, status, submit, waiting
from ds01q.services.dbguard import db_guarded

if TYPE_CHECKING:
    from ds01q.daemon.build import Daemon

log = logging.getLogger("ds01q.daemon.server")
Handler = Callable[[Context, Caller, dict[str, Any]], Any]
REFUSE_WAIT_S = 2.0

OPS: dict[str, Handler] = {
    "ping": lambda ctx, c, a: {"user": c.user, "uid": c.uid, "admin": c.admin},
    "submit": submit.submit,
    "submit_many": submit.submit_many,
    "queue": jobs.queue,
    "show": jobs.show,
    "wait": waiting.wait,
    "history": jobs.history,
    "cancel": jobs.cancel,
    "logs": jobs.logs,
    "status": status.status,
    "limits": status.limits,
    "admin.priority": jobs.set_priority,
    "hold": lambda ctx, c, a: holds.hold(ctx, c, a, release=False, admin=False),
    "release": lambda ctx, c, a: holds.hold(ctx, c, a, release=True, admin=False),
    "admin.hold": lambda ctx, c, a: holds.hold(ctx, c, a, release=False, admin=True),
    "admin.release": lambda ctx, c, a: holds.hold(ctx, c, a, release=True, admin=True),
    "admin.requeue": jobs.requeue,
    "admin.drain": lambda ctx, c, a: status.drain(ctx, c, a, on=True),
    "admin.resume": lambda ctx, c, a: status.drain(ctx, c, a, on=False),
    "admin.refresh": status.refresh,
    "admin.mig.plan": mig.plan,
    "admin.mig.apply": mig.apply,
    "report": accounting.report,
    "admin.accounting.rollup": accounting.rollup_op,
    "admin.audit": audit.audit,
}
OPS = {name: db_guarded(fn) for name, fn in OPS.items()}  # database trouble: one line, never a driver message


def peer_caller(ctx: Context, sock: socket.socket) -> Caller:
    """The caller's identity: its kernel uid mapped through the user database (daemon.identity)."""
    _pid, uid, gid = identity.peer_ids(sock)
    return identity.caller_for(ctx.config, uid, gid)


def handle(ctx: Context, caller: Caller, msg: dict[str, Any]) -> dict[str, Any]:
    op, args = msg.get("op"), msg.get("args") or {}
    fn = OPS.get(op) if isinstance(op, str) else None
    if fn is None:
        return protocol.error("request", f"unknown operation {op!r} (allowed: {', '.join(sorted(OPS))})")
    if not isinstance(args, dict):
        return protocol.error("request", "args must be a JSON object")
    try:
        return protocol.ok(fn(ctx, caller, args))
    except Ds01qError as e:
        return protocol.error(e.code, str(e))
    except Exception as e:  # never a traceback to the client
        log.exception("op %s failed", op)
        return protocol.error("error", f"internal error in {op}: {type(e).__name__}: {e}".splitlines()[0])


class _RequestHandler(socketserver.BaseRequestHandler):
    server: "SocketServer"

    def handle(self) -> None:
        ctx = self.server.ctx
        sec = ctx.config.security
        self.request.settimeout(sec.read_timeout_s)
        reader = protocol.LineReader(self.request, deadline_s=sec.read_timeout_s)
        _pid, uid, _gid = identity.peer_ids(self.request)
        try:
            caller = peer_caller(ctx, self.request)
        except Ds01qError as e:
            self._refuse(reader, protocol.error(e.code, str(e)))
            return
        if not self.server.limiter.acquire(uid):
            self._refuse(reader, protocol.error("busy", f"{caller.user} already has "
                                                f"{sec.max_connections_per_user} connections open to ds01q "
                                                "(security.max_connections_per_user); close some and retry"))
            return
        try:
            self._serve(ctx, caller, reader)
        finally:
            self.server.limiter.release(uid)

    def _refuse(self, reader: protocol.LineReader, answer: dict[str, Any]) -> None:
        """Answer the first request with ``answer`` (read first, so the client sees it), then hang up."""
        try:
            reader.deadline_s = REFUSE_WAIT_S  # a refused connection holds its thread this long at most
            reader.read()
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            pass
        try:
            protocol.send(self.request, answer)
        except OSError:
            pass

    def _serve(self, ctx: Context, caller: Caller, reader: protocol.LineReader) -> None:
        while True:
            try:
                msg = reader.read()
            except (ValueError, UnicodeDecodeError) as e:
                try:
                    protocol.send(self.request, protocol.error("request", f"malformed request: {e}"[:300]))
                except OSError:
                    pass
                return
            except OSError:
                return
            if msg is None:
                return
            if msg.get("op") == "attach":  # the connection now carries a terminal (ds01q.daemon.relay.attach)
                self.request.settimeout(None)
                relay.serve_attach(self.server.relay, caller, self.request, reader, msg.get("args") or {})
                return
            answer = handle(ctx, caller, msg)
            audit.record(ctx, caller, msg.get("op"), msg.get("args"), answer)
            try:
                protocol.send(self.request, answer)
            except OSError:
                return


class SocketServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN  # a burst of clients waits in the backlog, never refused

    def __init__(self, path: str, ctx: Context, relay_env: relay.RelayEnv) -> None:
        self.ctx = ctx
        self.relay = relay_env
        self.limiter = ConnectionLimiter(ctx.config.security.max_connections_per_user)
        self.janitor: Janitor | None = None
        self.gpuwatch: Any = None
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
                raise RequestError(f"another ds01q server is already listening on {path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)
            finally:
                probe.close()
        super().__init__(path, _RequestHandler)
        os.chmod(path, 0o666)


def start(daemon: Daemon) -> tuple[SocketServer, threading.Thread]:
    """Bind the socket and start the controller loop in a thread."""
    srv = SocketServer(daemon.ctx.config.socket, daemon.ctx, daemon.relay)
    loop = threading.Thread(target=daemon.controller.run, name="ds01q-loop", daemon=True)
    loop.start()
    srv.janitor = Janitor(daemon.ctx).start()
    srv.gpuwatch = start_gpu_watch(daemon.ctx)
    return srv, loop


def shutdown(daemon: Daemon, srv: SocketServer) -> None:
    if srv.janitor is not None:
        srv.janitor.stop()
    if srv.gpuwatch is not None:
        srv.gpuwatch[1].set()
    srv.server_close()
    try:
        os.unlink(daemon.ctx.config.socket)
    except OSError:
        pass
    daemon.controller.close()


def serve(daemon: Daemon) -> None:
    """Run the controller loop in a thread and the socket server in this one until SIGTERM/SIGINT."""
    srv, _loop = start(daemon)

    def stop(_sig: int, _frame: Any) -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda *_: daemon.controller.refresh_inventory(wait=False))
    log.info("listening on %s", daemon.ctx.config.socket)
    try:
        srv.serve_forever(poll_interval=0.5)
    finally:
        shutdown(daemon, srv)
