"""Accounting tables, on the same ``Base`` as ds01q.db.models (Alembic revision 0002).

    job_usage          one row per run of a job, written when the run ends (``record.on_job_end``)
    usage_samples      periodic samples of running jobs (``record.on_sample``)
    rollups            sums per period (day | month) x user x group x cgroup (``rollup.rollup``)
    rollup_watermarks  per period kind: every period that ends by ``done_until`` has been rolled up once
    rollup_dirty       periods whose rollup rows are out of date: a run that overlaps them ended after
                       they were rolled up (or before they ever were). ``version`` grows on every new mark,
                       so a rollup removes only the marks it has seen.

A *run* is one stretch from RUNNING to an end: a requeued job has one row per run,
numbered 1, 2, ... (``run``). Times are Unix seconds, like the rest of the schema.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ds01q.db.models import Base

__all__ = ["JobUsage", "Rollup", "RollupDirty", "RollupWatermark", "UsageSample"]


class JobUsage(Base):
    """What one run of a job used, as ``sacct`` reports it."""

    __tablename__ = "job_usage"
    __table_args__ = (
        UniqueConstraint("job_id", "run", name="uq_job_usage_run"),
        Index("ix_job_usage_started_at", "started_at"),
        Index("ix_job_usage_ended_at", "ended_at"),
        Index("ix_job_usage_wall_s", "wall_s"),
        Index("ix_job_usage_user", "user"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    run: Mapped[int] = mapped_column(Integer)
    user: Mapped[str] = mapped_column(String(128))
    group: Mapped[str] = mapped_column(String(64))
    cgroup: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[float] = mapped_column(Float)  # = ended_at for a run that never reached RUNNING
    ended_at: Mapped[float] = mapped_column(Float)
    wall_s: Mapped[float] = mapped_column(Float)
    gpu_share: Mapped[float] = mapped_column(Float)  # sum of Allocation.gpu_equiv of the run
    gpu_mem_mb: Mapped[int] = mapped_column(Integer)  # sum of Allocation.memory_mb of the run
    profiles: Mapped[str] = mapped_column(String(200))  # comma-joined, sorted
    gpu_equiv_s: Mapped[float] = mapped_column(Float)
    gpu_mem_gb_h: Mapped[float] = mapped_column(Float)
    cpu_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    energy_kwh: Mapped[float | None] = mapped_column(Float, nullable=True)
    recorded_at: Mapped[float] = mapped_column(Float)


class UsageSample(Base):
    """One sample of a running job: cgroup CPU/memory and, where NVML gives them, GPU util and power."""

    __tablename__ = "usage_samples"
    __table_args__ = (Index("ix_usage_samples_job_at", "job_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    at: Mapped[float] = mapped_column(Float)
    cpu_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    mem_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gpu_util: Mapped[float | None] = mapped_column(Float, nullable=True)
    power_w: Mapped[float | None] = mapped_column(Float, nullable=True)


class Rollup(Base):
    """Sums of the job runs that overlap one period, split by overlap."""

    __tablename__ = "rollups"
    __table_args__ = (UniqueConstraint("period", "period_start", "user", "group", "cgroup", name="uq_rollups_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period: Mapped[str] = mapped_column(String(8))
    period_start: Mapped[float] = mapped_column(Float)
    user: Mapped[str] = mapped_column(String(128))
    group: Mapped[str] = mapped_column(String(64))
    cgroup: Mapped[str] = mapped_column(String(300))
    jobs: Mapped[int] = mapped_column(Integer)  # runs that started (wall > 0) in the period
    wall_s: Mapped[float] = mapped_column(Float)
    gpu_equiv_s: Mapped[float] = mapped_column(Float)
    gpu_mem_gb_h: Mapped[float] = mapped_column(Float)
    cpu_s: Mapped[float] = mapped_column(Float)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    energy_kwh: Mapped[float | None] = mapped_column(Float, nullable=True)
    computed_at: Mapped[float] = mapped_column(Float)


class RollupWatermark(Base):
    __tablename__ = "rollup_watermarks"

    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    done_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class RollupDirty(Base):
    __tablename__ = "rollup_dirty"

    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[float] = mapped_column(Float, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
