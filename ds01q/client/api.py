"""``ds01q.Client``: the thin client of the daemon's socket. The CLI uses it too."""
from __future__ import annotations

import errno
import os
import secrets
import socket
import time
from typing import Any, Iterator, Sequence

from ds01q import protocol
from ds01q.errors import BY_CODE, Busy, Ds01qError, RequestError, ServerUnavailable
from ds01q.types import FINAL_NAMES, queue_order
from ds01q.client.directives import gres as parse_gres
from ds01q.client.directives import parse_options, read_directives

DEFAULT_SOCKET = "/run/ds01q/ds01q.sock"
DEFAULT_CONFIG = "/etc/ds01q/ds01q.yaml"
FINAL = FINAL_NAMES  # one definition, in the leaf types module
# The CLI's exit code for a job that ended without its own exit code (shell conventions: 128+signal).
EXIT_BY_STATE = {"CANCELLED": 130, "TIMEOUT": 124, "OUT_OF_MEMORY": 137, "NODE_FAIL": 1}
GPU_KEYS = ("gpus", "mig", "gpu_mem", "gpu_model")
# options given in sbatch's syntax (strings), read with the directives' parser
SLURM_SYNTAX = ("array", "dependency", "begin", "error", "chdir", "signal", "mail_type", "mail_user", "export",
                "open_mode")


def merge(lower: dict[str, Any], higher: dict[str, Any]) -> dict[str, Any]:
    """Options of ``higher`` override those of ``lower`` (a GPU request replaces the whole GPU request;
    environment variables merge, ``higher`` winning)."""
    out = dict(lower)
    if any(higher.get(k) is not None for k in GPU_KEYS):
        for k in GPU_KEYS:
            out.pop(k, None)
    env = {**(lower.get("env") or {}), **(higher.get("env") or {})}
    out.update({k: v for k, v in higher.items() if v is not None})
    if env:
        out["env"] = env
    return out


def exported(options: dict[str, Any], warnings: list[str]) -> None:
    """--export: copy the named variables from this environment into the job's ``env``."""
    export = options.get("export")
    if not export:
        return
    env = dict(options.get("env") or {})
    for name in export.get("names", []):
        if name in os.environ and name not in env:
            env[name] = os.environ[name]
    if export.get("mode") == "ALL":
        warnings.append("--export=ALL: ds01q does not copy your whole environment into a job; name the variables "
                        "(--export=VAR1,VAR2 or --env KEY=VALUE)")
    if env:
        options["env"] = env


def socket_path(config_path: str | None = None) -> str:
    if os.environ.get("DS01Q_SOCKET"):
        return os.environ["DS01Q_SOCKET"]
    path = config_path or os.environ.get("DS01Q_CONFIG") or DEFAULT_CONFIG
    try:
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f) or {}
        sock = (data.get("server") or {}).get("socket") if isinstance(data, dict) else None
        return str(sock) if sock else DEFAULT_SOCKET
    except (OSError, ValueError, AttributeError):
        return DEFAULT_SOCKET
    except Exception:  # a YAML error: the server reports it; the client falls back
        return DEFAULT_SOCKET


RETRY_ERRNOS = (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN)  # no socket yet, restarting, backlog full


def connect(path: str, timeout: float | None = None, wait: float = 0.0) -> socket.socket:
    """A connected socket to the daemon, or a one-line ServerUnavailable.

    A missing socket, a refusal and a full listen backlog (EAGAIN) are retried with backoff
    for up to ``wait`` seconds: a daemon that restarts or is flooded still answers."""
    deadline = time.monotonic() + wait
    delay = 0.01
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s
        except PermissionError:
            s.close()
            raise ServerUnavailable(f"cannot connect to {path}: permission denied") from None
        except OSError as e:
            s.close()
            if e.errno not in RETRY_ERRNOS:
                raise ServerUnavailable(f"cannot connect to {path}: {e.strerror or e}") from None
            if time.monotonic() + delay > deadline:
                if e.errno == errno.EAGAIN:
                    raise ServerUnavailable(f"the ds01q server on {path} is too busy to accept a connection "
                                            f"(tried for {wait:.0f} s)") from None
                raise ServerUnavailable(f"no ds01q server on {path} (start `ds01q server`, or set DS01Q_SOCKET)"
                                        ) from None
            time.sleep(delay * (0.5 + secrets.randbelow(1000) / 1000))
            delay = min(delay * 2, 0.5)


def roundtrip(sock: socket.socket, reader: protocol.LineReader, op: str, args: dict[str, Any]) -> Any:
    """Send one request and return its result; the daemon's error is raised as the same Ds01qError."""
    try:
        protocol.send(sock, {"op": op, "args": args})
        resp = reader.read()
    except (OSError, ValueError) as e:
        raise ServerUnavailable(f"lost the connection to the ds01q server ({e})") from None
    if resp is None:
        raise ServerUnavailable("the ds01q server closed the connection")
    if resp.get("ok"):
        return resp.get("result")
    err = resp.get("error") or {}
    raise BY_CODE.get(err.get("code", "error"), Ds01qError)(err.get("message", "unknown error"))


class Client:
    """Talks to ``ds01q server`` over its Unix socket; identity comes from the kernel."""

    def __init__(self, socket_path_: str | None = None, *, config: str | None = None, timeout: float = 60.0,
                 connect_wait: float | None = None) -> None:
        self.path = socket_path_ or socket_path(config)
        self.timeout = timeout
        # how long a refused / busy / missing socket is retried (default: up to 10 s of the timeout)
        self.connect_wait = min(timeout, 10.0) if connect_wait is None else connect_wait
        self._sock: socket.socket | None = None
        self._reader: protocol.LineReader | None = None
        self.last_warnings: list[str] = []
        self.last_result: dict[str, Any] = {}

    # ------------------------------------------------------------ transport
    def _connect(self) -> None:
        s = connect(self.path, self.timeout, self.connect_wait)
        self._sock, self._reader = s, protocol.LineReader(s)

    def call(self, op: str, **args: Any) -> Any:
        """One request. A daemon that is busy with this user's other connections (``Busy``) is
        asked again with backoff for up to ``connect_wait`` seconds, like a full backlog."""
        deadline = time.monotonic() + self.connect_wait
        delay = 0.02
        while True:
            if self._sock is None:
                self._connect()
            assert self._sock is not None and self._reader is not None
            try:
                return roundtrip(self._sock, self._reader, op, args)
            except Busy:
                self.close()
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay * (0.5 + secrets.randbelow(1000) / 1000))
                delay = min(delay * 2, 0.5)
            except ServerUnavailable:
                self.close()
                raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ operations
    def prepare(self, script: str | None, args: Sequence[str] = (), *, workdir: str | None = None,
                interactive: bool = False, slurm_args: Sequence[str] = (),
                **options: Any) -> tuple[dict[str, Any], list[str]]:
        """The submit request and the warnings, without sending it. Order of precedence, lowest first: the
        script's ``#SBATCH``/``#DS01Q`` lines, ``slurm_args`` (sbatch's options as words), ``options``."""
        req: dict[str, Any] = {}
        warnings: list[str] = []
        if script is not None:
            try:
                with open(script, encoding="utf-8", newline="") as f:  # keep \r\n: sbatch refuses it
                    text = f.read(1024 * 1024 + 1)
            except OSError as e:
                raise RequestError(f"cannot read script {script}: {e.strerror}") from None
            except UnicodeDecodeError:
                raise RequestError(f"script {script} is not UTF-8 text") from None
            if not text.strip():
                raise RequestError(f"script {script} is empty")
            parsed = read_directives(text)
            req, warnings = dict(parsed.options), list(parsed.warnings)
            req.update(script=text, script_path=os.path.abspath(script))
        if slurm_args:
            parsed = parse_options(list(slurm_args))
            if parsed.args:
                raise RequestError(f"{parsed.args[0]!r} is not an option")
            req = merge(req, parsed.options)
            warnings += parsed.warnings
        given = {k: v for k, v in options.items() if v is not None}
        if given.get("gres"):
            given.update(parse_gres(given.pop("gres")))
        given.pop("gres", None)
        words = [f"--{k.replace('_', '-')}={given.pop(k)}" for k in SLURM_SYNTAX if isinstance(given.get(k), str)]
        if words:
            parsed = parse_options(words)
            given = merge(parsed.options, given)
            warnings += parsed.warnings
        req = merge(req, given)
        exported(req, warnings)
        req.update(args=list(args), workdir=workdir or os.getcwd(), interactive=interactive)
        return req, warnings

    def submit(self, script: str | None, args: Sequence[str] = (), *, workdir: str | None = None,
               interactive: bool = False, slurm_args: Sequence[str] = (), **options: Any) -> int:
        """Queue a batch job (``script`` is a path) or, with ``interactive``, a shell. Options as in the CLI:
        mig, gpus, gpu_mem, gres, cpus, mem, time, image, name, nice, env, output, hold, and sbatch's array,
        dependency, begin, error, chdir, signal, mail_type, mail_user, export, open_mode, requeue. ``#DS01Q``/
        ``#SBATCH`` lines in the script give defaults; ``slurm_args`` (sbatch's flags) and explicit options win.
        The warnings (options ignored or only recorded) are in ``last_warnings`` afterwards."""
        req, warnings = self.prepare(script, args, workdir=workdir, interactive=interactive, slurm_args=slurm_args,
                                     **options)
        result = self.call_idempotent("submit", req)
        self.last_warnings = warnings + list(result.get("warnings") or [])
        self.last_result = result
        return int(result["id"])

    def call_idempotent(self, op: str, req: dict[str, Any]) -> Any:
        """Send a submit with an idempotency key; if the connection is lost before the reply,
        reconnect and send the same request again: the daemon answers with the same job(s)."""
        req.setdefault("key", secrets.token_hex(16))
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self.call(op, **req)
            except ServerUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def submit_many(self, jobs: Sequence[dict[str, Any]]) -> list[int]:
        """Queue many jobs in one request and one transaction. Each item is a submit request as the
        daemon takes it (script text, workdir, options...); returns their ids in order."""
        cwd = os.getcwd()
        items = [{"workdir": cwd, **dict(j)} for j in jobs]
        return [int(i) for i in self.call_idempotent("submit_many", {"jobs": items})["ids"]]

    def dry_run(self, script: str, args: Sequence[str] = (), *, workdir: str | None = None,
                slurm_args: Sequence[str] = (), **options: Any) -> dict[str, Any]:
        """The job ``submit`` would queue, in ``show --json``'s shape with ``warnings``; queues nothing."""
        req, warnings = self.prepare(script, args, workdir=workdir, slurm_args=slurm_args, **options)
        view = dict(self.call("submit", **req, dry_run=True))
        view["warnings"] = warnings + list(view.get("warnings") or [])
        return view

    def submit_array(self, script: str, array: str | dict[str, Any], args: Sequence[str] = (),
                     **options: Any) -> dict[str, Any]:
        """Queue an array in one request: ``{"job_id": first task's id (the array's id), "tasks": N, ...}``."""
        self.submit(script, args, array=array, **options)
        return dict(self.last_result.get("array") or {"job_id": self.last_result["id"], "tasks": 1})

    QUEUE_PAGE = 2000

    def queue(self, user: str | None = None) -> list[dict[str, Any]]:
        """Every active job, in ``queue`` order. Asked for in pages by job id (a queue of tens of thousands
        of jobs does not fit one reply line); a job that changes state meanwhile is listed once."""
        jobs: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            page = self.call("queue", user=user, after=after, limit=self.QUEUE_PAGE)
            jobs += page["jobs"]
            after = page["next"]
        jobs.sort(key=lambda j: queue_order(j["state"], j.get("priority"), j["id"]))
        return jobs

    def show(self, job_id: int) -> dict[str, Any]:
        return self.call("show", id=job_id)  # type: ignore[no-any-return]

    def history(self, **filters: Any) -> list[dict[str, Any]]:
        return self.call("history", **filters)  # type: ignore[no-any-return]

    def cancel(self, *job_ids: int) -> list[dict[str, Any]]:
        return self.call("cancel", ids=list(job_ids))  # type: ignore[no-any-return]

    def hold(self, *job_ids: int) -> list[dict[str, Any]]:
        return self.call("hold", ids=list(job_ids))  # type: ignore[no-any-return]

    def release(self, *job_ids: int) -> list[dict[str, Any]]:
        return self.call("release", ids=list(job_ids))  # type: ignore[no-any-return]

    def logs(self, job_id: int, follow: bool = False, poll_s: float = 0.5, error: bool = False) -> Iterator[str]:
        """The job's output from the start: pages by offset until the end of the file (the daemon
        answers at most a page per request); with ``follow``, then waits for more until the job ends.
        ``error``: its ``--error`` file instead (the output file when it named none)."""
        offset = 0
        while True:
            r = self.call("logs", id=job_id, offset=offset, **({"error": True} if error else {}))
            if r["data"]:
                yield r["data"]
            moved = r["offset"] != offset
            offset = r["offset"]
            if r["data"] and moved:
                continue  # more may follow at once: read until a page comes back empty
            if not follow or r["final"]:
                return
            time.sleep(poll_s)

    def wait(self, job_id: int, poll_s: float = 0.2, timeout: float | None = None,
             restart_s: float = 300.0) -> dict[str, Any]:
        """Wait until the job ends (or ``timeout`` seconds pass) and return it as ``show`` does. A daemon that
        goes away (restart) is waited for up to ``restart_s`` seconds at a time: the job goes on meanwhile.
        ``poll_s`` is kept for callers of the old polling wait; the daemon now waits (``wait_states``)."""
        self.wait_states([job_id], timeout, restart_s)
        return self.show_surviving_restart(job_id, restart_s)

    def wait_states(self, job_ids: Sequence[int], timeout: float | None = None,
                    restart_s: float = 300.0) -> dict[int, str]:
        """The jobs' states once all of them are final, or when ``timeout`` seconds have passed. The daemon
        answers each ``wait`` request when they are (or after a while, within this client's read timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        per_request = max(0.5, min(20.0, self.timeout / 2))
        while True:
            left = per_request if deadline is None else max(0.0, min(per_request, deadline - time.monotonic()))
            try:
                out = self.call("wait", ids=list(job_ids), timeout=round(left, 3))
            except ServerUnavailable:
                self._reconnect(restart_s)
                continue
            if out["done"] or (deadline is not None and time.monotonic() >= deadline):
                return {int(k): v for k, v in out["states"].items()}

    def show_surviving_restart(self, job_id: int, restart_s: float = 300.0) -> dict[str, Any]:
        """``show``; a daemon that goes away (restart) is waited for up to ``restart_s`` seconds at a time."""
        while True:
            try:
                return self.show(job_id)
            except ServerUnavailable:
                self._reconnect(restart_s)

    def _reconnect(self, wait_s: float) -> None:
        self.close()
        s = connect(self.path, self.timeout, wait_s)
        self._sock, self._reader = s, protocol.LineReader(s)

    def status(self) -> dict[str, Any]:
        return self.call("status")  # type: ignore[no-any-return]

    def limits(self, user: str | None = None) -> dict[str, Any]:
        return self.call("limits", user=user)  # type: ignore[no-any-return]
