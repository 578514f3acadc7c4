"""Node failure: a node whose agent missed ``dispatch.missed_heartbeats`` heartbeats is DOWN.

In one transaction per tick: the node goes DOWN, and every job that holds slices there ends
NODE_FAIL (``request_stop(NODE_DOWN)`` + ``end_run``: its slices are released); batch jobs
go back to the queue (``requeue``, if the job allows it), interactive ones stay ended. The
scheduler places nothing on a DOWN node (``Snapshot.unavailable_nodes``). When the agent
comes back its heartbeat makes the node UP again, and the agent stops whatever container
it still runs for a job that moved on (``daemon.agent``)."""
from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from ds01q import accounting
from ds01q.controller.deps import LoopDeps
from ds01q.db import jobstate, nodes, store
from ds01q.db.models import Job
from ds01q.types import JobState, StopOutcome

log = logging.getLogger("ds01q.controller.nodes")


def check_nodes(deps: LoopDeps, now: float) -> list[int]:
    """Mark silent nodes DOWN and end the jobs of every DOWN node. Returns the ended jobs.

    A DRAINED node stays DRAINED when it goes silent (only ``ds01q admin resume`` ends a drain,
    and a heartbeat brings back only DOWN nodes); its jobs end all the same."""
    cfg = deps.config
    if cfg.dispatch.kind != "rq":
        return []
    limit = cfg.dispatch.down_after_s
    ended: list[int] = []
    with deps.sessions.begin() as session:
        down: set[str] = set()
        for node in nodes.all_nodes(session):
            silent = now - node.last_heartbeat > limit
            if node.state == nodes.UP and silent:
                why = f"no heartbeat for {now - node.last_heartbeat:.0f}s (limit {limit:g}s)"
                nodes.set_state(session, node, nodes.DOWN, why)
                log.warning("node %s is DOWN: %s", node.name, why)
            if node.state == nodes.DOWN or (node.state == nodes.DRAINED and silent):
                down.add(node.name)
        if not down:
            return []
        for job in store.jobs_in(session, store.HOLDING):
            if job.node in down:
                fail_job(session, job, now, cfg.executor.cgroup_root, f"node {job.node} down")
                ended.append(job.id)
    return ended


def fail_job(session: Session, job: Job, now: float, cgroup_root: str, why: str) -> JobState:
    """End the run of ``job`` on a lost node: NODE_FAIL, slices released, batch jobs requeued."""
    jobstate.request_stop(session, job, StopOutcome.NODE_DOWN, at=now, by="ds01q", detail=why)
    if job.stop_outcome is None:  # it was already STOPPING for another reason: the node loss wins
        job.stop_outcome = StopOutcome.NODE_DOWN
    state = jobstate.end_run(session, job, exit_code=None, oom=False, at=now, error=why)
    accounting.on_job_end(session, job, store.allocations_of(session, job.id, active_only=False), now,
                          cgroup_root=cgroup_root)
    if not job.interactive and jobstate.wants_requeue(job, state):
        jobstate.requeue(session, job, at=now, why=f"requeued: {why}")
    return state
