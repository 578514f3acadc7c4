"""SQLAlchemy ORM tables. Schema changes go through Alembic (ds01q/db/migrations/, shipped in the package).

The ``allocations`` table carries a partial unique index: at most one row per
slice with ``released_at IS NULL``. The database itself refuses a double
allocation, whatever the code above it does.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Enum, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ds01q.types import Reason, StopOutcome


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    # AUTOINCREMENT on SQLite: a job id is never handed out twice, even after rows are lost
    __table_args__ = (Index("ux_jobs_user_submit_key", "user", "submit_key", unique=True),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    user: Mapped[str] = mapped_column(String(128), index=True)
    uid: Mapped[int] = mapped_column(Integer)
    gid: Mapped[int] = mapped_column(Integer)
    group: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    # why a PENDING/HELD job waits (typed); why a job ended or was stopped (free text)
    reason: Mapped[Reason | None] = mapped_column(
        Enum(Reason, native_enum=False, length=32, validate_strings=True,
             values_callable=lambda e: [m.value for m in e]), nullable=True)
    reason_detail: Mapped[str | None] = mapped_column(String(400), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    stop_outcome: Mapped[StopOutcome | None] = mapped_column(
        Enum(StopOutcome, native_enum=False, length=16, validate_strings=True,
             values_callable=lambda e: [m.value for m in e]), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    boost: Mapped[int] = mapped_column(Integer, default=0)
    nice: Mapped[int] = mapped_column(Integer, default=0)
    interactive: Mapped[bool] = mapped_column(Boolean, default=False)
    request: Mapped[str] = mapped_column(Text)  # JSON of ResourceRequest
    cpus: Mapped[float | None] = mapped_column(Float, nullable=True)
    mem_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    time_limit_s: Mapped[float] = mapped_column(Float)
    image: Mapped[str] = mapped_column(String(400))
    script: Mapped[str | None] = mapped_column(Text, nullable=True)
    script_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    args: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    workdir: Mapped[str] = mapped_column(String(4096))
    output_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    env: Mapped[str] = mapped_column(Text, default="{}")  # JSON, user-supplied extras
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    eligible_at: Mapped[float] = mapped_column(Float, default=0.0)
    estimated_start: Mapped[float | None] = mapped_column(Float, nullable=True)
    requeue_count: Mapped[int] = mapped_column(Integer, default=0)
    requeue_on_layout_change: Mapped[bool] = mapped_column(Boolean, default=True)
    container: Mapped[str | None] = mapped_column(String(128), nullable=True)
    node: Mapped[str | None] = mapped_column(String(128), nullable=True)
    array_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    depends_on: Mapped[str] = mapped_column(Text, default="[]")  # JSON: afterok ids, or a Slurm dependency object
    # Slurm compatibility (migration 0005c_slurm)
    error_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    array_task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    array_throttle: Mapped[int | None] = mapped_column(Integer, nullable=True)
    signal: Mapped[str | None] = mapped_column(String(64), nullable=True)  # JSON {signal, seconds, batch_only}
    mail_user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    mail_type: Mapped[str | None] = mapped_column(String(256), nullable=True)  # comma-separated
    open_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    held_by_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    cpu_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # launch attempt, counted up by each assume: names the container (instance, job, attempt)
    launch_attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # client-chosen idempotency key: a retried submit with the same key returns the same job
    submit_key: Mapped[str | None] = mapped_column(String(128), nullable=True)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(400), nullable=True)
    by: Mapped[str] = mapped_column(String(128))


class Gpu(Base):
    __tablename__ = "gpus"

    uuid: Mapped[str] = mapped_column(String(96), primary_key=True)
    node: Mapped[str] = mapped_column(String(128), default="local")
    name: Mapped[str] = mapped_column(String(128))
    index: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    mig_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    drain_reason: Mapped[str | None] = mapped_column(String(400), nullable=True)
    utilization: Mapped[float | None] = mapped_column(Float, nullable=True)


class Slice(Base):
    __tablename__ = "slices"

    uuid: Mapped[str] = mapped_column(String(96), primary_key=True)
    gpu_uuid: Mapped[str] = mapped_column(String(96), index=True)
    node: Mapped[str] = mapped_column(String(128), default="local")
    profile: Mapped[str] = mapped_column(String(32))
    compute_slices: Mapped[int] = mapped_column(Integer)
    gpu_compute_slices: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gpu_name: Mapped[str] = mapped_column(String(128), default="")
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    drain_reason: Mapped[str | None] = mapped_column(String(400), nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)  # bumped each time the UUID (re)appears
    # MIG placement (migration 0006_mig_placement): first memory slice, size, GPU instance id; None when unknown
    placement_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    placement_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gi_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Allocation(Base):
    __tablename__ = "allocations"
    __table_args__ = (
        Index(
            "uq_allocations_active_slice",
            "slice_uuid",
            unique=True,
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    slice_uuid: Mapped[str] = mapped_column(String(96))
    slice_generation: Mapped[int] = mapped_column(Integer, default=1)
    profile: Mapped[str] = mapped_column(String(32))
    gpu_uuid: Mapped[str] = mapped_column(String(96))
    gpu_equiv: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    allocated_at: Mapped[float] = mapped_column(Float)
    released_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class InventoryEvent(Base):
    """A change of the GPU inventory: a slice or GPU appeared, vanished, was drained or resumed."""

    __tablename__ = "inventory_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # added | removed | drained | resumed
    uuid: Mapped[str] = mapped_column(String(96))
    detail: Mapped[str | None] = mapped_column(String(400), nullable=True)
    by: Mapped[str] = mapped_column(String(128))


# ----------------------------------------------------------------- several nodes (dispatch.kind: rq)
class Node(Base):
    """A GPU node whose agent reports to this database. State UP, DOWN (missed heartbeats) or
    DRAINED (``ds01q admin drain NODE``). ``running`` is the agent's last list of live
    containers, JSON ``{job_id: container id}``."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="UP")
    reason: Mapped[str | None] = mapped_column(String(400), nullable=True)
    last_heartbeat: Mapped[float] = mapped_column(Float)
    registered_at: Mapped[float] = mapped_column(Float)
    running: Mapped[str] = mapped_column(Text, default="{}")


class NodeCommand(Base):
    """A request the server dispatched to a node's agent (start, stop, signal, exec, remove).
    The row is written before the RQ message; the agent acknowledges by moving ``state``
    from ``sent`` to ``done`` or ``failed`` (compare-and-set), so a message that Redis lost is
    sent again and one delivered twice is executed once."""

    __tablename__ = "node_commands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(128), index=True)
    job_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(16), default="sent", index=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    done_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class NodeExit(Base):
    """How a container on a node ended, as its agent saw it. One row per (job, container): an
    exit reported twice is stored once (the unique key refuses the second)."""

    __tablename__ = "node_exits"
    __table_args__ = (Index("uq_node_exits_job_ref", "job_id", "ref", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[int] = mapped_column(Integer)
    ref: Mapped[str] = mapped_column(String(128))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    oom_killed: Mapped[bool] = mapped_column(Boolean, default=False)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str] = mapped_column(String(400), default="")
    reported_at: Mapped[float] = mapped_column(Float)


class NodeSample(Base):
    """The latest usage sample of a container on a node (one row per job, overwritten)."""

    __tablename__ = "node_samples"

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(128))
    cpu_s: Mapped[float] = mapped_column(Float)
    mem_bytes: Mapped[int] = mapped_column(BigInteger)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    at: Mapped[float] = mapped_column(Float)
