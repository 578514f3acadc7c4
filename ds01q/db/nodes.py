"""The node registry and the dispatch tables (queries and updates; the caller owns the transaction).

A node exists once its agent sent a heartbeat. ``UP`` nodes take jobs; ``DOWN`` (missed
heartbeats) and ``DRAINED`` (``ds01q admin drain NODE``) nodes take none. Commands to an
agent, the exits and the usage samples it reports travel through these tables; Redis only
carries "look at command N" (see docs/ARCHITECTURE.md, "Several nodes")."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ds01q.db.models import Node, NodeCommand, NodeExit, NodeSample

UP, DOWN, DRAINED = "UP", "DOWN", "DRAINED"
NODE_STATES = (UP, DOWN, DRAINED)
SENT, DONE, FAILED = "sent", "done", "failed"


def get(session: Session, name: str) -> Node | None:
    return session.get(Node, name)


def all_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.name)))


_UNAVAILABLE = select(Node.name).where(Node.state != UP)  # built once: each scheduling pass runs it


def unavailable(session: Session) -> frozenset[str]:
    """Nodes that must get no new job (DOWN or DRAINED). A node never registered is not here."""
    return frozenset(session.scalars(_UNAVAILABLE))


def heartbeat(session: Session, name: str, now: float, running: dict[int, str]) -> Node:
    """Record that ``name``'s agent is alive and what runs there. A DOWN node comes back UP;
    a DRAINED one stays drained."""
    node = session.get(Node, name)
    if node is None:
        node = Node(name=name, state=UP, registered_at=now, last_heartbeat=now)
        session.add(node)
    elif node.state == DOWN:
        node.state, node.reason = UP, None
    node.last_heartbeat = now
    node.running = json.dumps({str(k): v for k, v in sorted(running.items())})
    session.flush()
    return node


def running_of(node: Node) -> dict[int, str]:
    return {int(k): str(v) for k, v in json.loads(node.running or "{}").items()}


def set_state(session: Session, node: Node, state: str, reason: str | None) -> None:
    node.state, node.reason = state, reason


# ----------------------------------------------------------------- commands
def add_command(session: Session, node: str, job_id: int, kind: str, payload: dict[str, Any], now: float) -> int:
    cmd = NodeCommand(node=node, job_id=job_id, kind=kind, payload=json.dumps(payload), state=SENT, created_at=now)
    session.add(cmd)
    session.flush()
    return cmd.id


def finish_command(session: Session, cmd_id: int, ok: bool, result: dict[str, Any], now: float) -> bool:
    """Acknowledge a command once: ``sent`` → ``done``/``failed``. False if it was already acknowledged."""
    res = session.execute(update(NodeCommand).where(NodeCommand.id == cmd_id, NodeCommand.state == SENT)
                          .values(state=DONE if ok else FAILED, result=json.dumps(result), done_at=now)
                          .execution_options(synchronize_session=False))
    return res.rowcount == 1  # type: ignore[attr-defined]


def unacknowledged(session: Session, older_than: float) -> list[NodeCommand]:
    return list(session.scalars(select(NodeCommand).where(NodeCommand.state == SENT,
                                                          NodeCommand.created_at < older_than)
                                .order_by(NodeCommand.id)))


# ----------------------------------------------------------------- exits and samples
def record_exit(session: Session, *, node: str, job_id: int, ref: str, exit_code: int | None, oom: bool,
                finished_at: float | None, cpu_s: float | None, max_rss_bytes: int | None, error: str,
                now: float) -> bool:
    """Store how container ``ref`` of ``job_id`` ended; False (nothing written) if it was already reported."""
    if session.scalar(select(NodeExit.id).where(NodeExit.job_id == job_id, NodeExit.ref == ref)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(NodeExit(node=node, job_id=job_id, ref=ref, exit_code=exit_code, oom_killed=oom,
                                 finished_at=finished_at, cpu_s=cpu_s, max_rss_bytes=max_rss_bytes,
                                 error=error[:400], reported_at=now))
    except IntegrityError:  # another reporter won the race: the unique key keeps one row
        return False
    return True


def exit_of(session: Session, job_id: int, ref: str) -> NodeExit | None:
    return session.scalar(select(NodeExit).where(NodeExit.job_id == job_id, NodeExit.ref == ref))


def exits_after(session: Session, last_id: int) -> list[NodeExit]:
    return list(session.scalars(select(NodeExit).where(NodeExit.id > last_id).order_by(NodeExit.id)))


def put_sample(session: Session, job_id: int, ref: str, cpu_s: float, mem_bytes: int,
               max_rss_bytes: int | None, now: float) -> None:
    row = session.get(NodeSample, job_id) or NodeSample(job_id=job_id)
    row.ref, row.cpu_s, row.mem_bytes, row.max_rss_bytes, row.at = ref, cpu_s, mem_bytes, max_rss_bytes, now
    session.add(row)


def sample_of(session: Session, job_id: int, ref: str) -> NodeSample | None:
    row = session.get(NodeSample, job_id)
    return row if row is not None and row.ref == ref else None
