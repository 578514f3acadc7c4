"""The database itself: migrations, WAL, and the refusal of a double allocation."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from ds01q.db import store
from ds01q.db.engine import make_engine, make_sessionmaker, upgrade
from ds01q.db.models import Job, JobEvent, Slice
from ds01q.db.jobstate import transition
from ds01q.types import JobState
from tests.dbs import postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    url = f"sqlite:///{tmp_path}/t.db" if request.param == "sqlite" else postgres_url()
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _job(session, user="u") -> Job:
    job = Job(name="j", user=user, uid=1000, gid=1000, group="student", state="PENDING", request=json.dumps({}),
              time_limit_s=60, image="img", workdir="/tmp", submitted_at=1.0)
    session.add(job)
    session.flush()
    return job


def _slice(session, uuid="MIG-1") -> Slice:
    s = Slice(uuid=uuid, gpu_uuid="GPU-1", profile="2g.10gb", compute_slices=2, gpu_compute_slices=7, memory_mb=9984)
    session.add(s)
    session.flush()
    return s


def test_migrations_create_every_table(sessions):
    names = set(inspect(sessions.kw["bind"]).get_table_names())
    assert {"jobs", "job_events", "slices", "gpus", "allocations", "alembic_version"} <= names


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path):
    url = f"sqlite:///{tmp_path}/wal.db"
    upgrade(url)
    with make_sessionmaker(make_engine(url))() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_database_refuses_two_active_allocations_on_one_slice(sessions):
    with sessions.begin() as s:
        sl = _slice(s)
        a, b = _job(s, "a"), _job(s, "b")
        store.allocate(s, a.id, [sl], at=2.0)
        a_id, b_id = a.id, b.id
    with pytest.raises(IntegrityError):
        with sessions.begin() as s:
            store.allocate(s, b_id, [s.get(Slice, "MIG-1")], at=3.0)
    # also straight SQL, bypassing the ORM
    with pytest.raises(IntegrityError):
        with sessions.begin() as s:
            s.execute(text("INSERT INTO allocations (job_id, slice_uuid, slice_generation, profile, gpu_uuid, gpu_equiv,"
                           " memory_mb, allocated_at) VALUES (:j, 'MIG-1', 1, '2g.10gb', 'GPU-1', 0.28, 9984, 4.0)"),
                      {"j": b_id})
    with sessions.begin() as s:  # once released, the slice can be allocated again
        assert store.release(s, a_id, at=5.0) == 1
        store.allocate(s, b_id, [s.get(Slice, "MIG-1")], at=6.0)
    with sessions() as s:
        assert [al.job_id for al in store.active_allocations(s)] == [b_id]


def test_transition_writes_an_event_and_refuses_illegal_edges(sessions):
    from ds01q.errors import RequestError

    with sessions.begin() as s:
        job = _job(s)
        transition(s, job, JobState.STARTING, at=2.0, by="scheduler", reason="allocated")
        transition(s, job, JobState.RUNNING, at=3.0, by="ds01q")
        transition(s, job, JobState.COMPLETED, at=4.0, by="ds01q")
        job_id = job.id
    with sessions() as s:
        evs = s.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id).all()
        assert [(e.state, e.by) for e in evs] == [("STARTING", "scheduler"), ("RUNNING", "ds01q"), ("COMPLETED", "ds01q")]
        job = s.get(Job, job_id)
        assert job.started_at == 3.0 and job.ended_at == 4.0
        with pytest.raises(RequestError, match="cannot go from COMPLETED to RUNNING"):
            transition(s, job, JobState.RUNNING, at=5.0, by="x")


def test_a_read_snapshot_sees_one_moment_so_a_job_and_its_events_agree(sessions):
    """``show`` read a job as STOPPING and, a statement later, the events of its end (CI, issue 11):
    reads in a ``store.snapshot`` all see the database as of the first one."""
    with sessions.begin() as s:
        jid = _job(s).id

    def end_it(state: str) -> None:
        with sessions.begin() as w:
            w.execute(update(Job).where(Job.id == jid).values(state=state))
            w.add(JobEvent(job_id=jid, at=3.0, state=state, reason="ended", by="ds01q"))

    with sessions() as plain:
        assert plain.scalar(select(Job.state).where(Job.id == jid)) == "PENDING"
        end_it("HELD")
        assert plain.scalar(select(Job.state).where(Job.id == jid)) == "HELD"  # each statement its own moment
    with store.snapshot(sessions) as reader:
        assert store.get_job(reader, jid).state == "HELD"
        end_it("CANCELLED")
        assert reader.scalar(select(Job.state).where(Job.id == jid)) == "HELD"
        assert [e.state for e in store.events_for(reader, [jid])[jid]] == ["HELD"]
    with store.snapshot(sessions) as later:
        assert [e.state for e in store.events_for(later, [jid])[jid]] == ["HELD", "CANCELLED"]
