"""The audit log: one row per state-changing request (who, what, on what, the result).

Written by ``ds01q.services.audit`` after each such request, in its own transaction, whatever the
result; read by admins with ``ds01q admin audit``. Rows are never updated.
"""
from __future__ import annotations

from sqlalchemy import Boolean, Float, Index, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ds01q.db.models import Base


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_user_at", "user", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, nullable=False, index=True)
    uid: Mapped[int] = mapped_column(Integer, nullable=False)
    user: Mapped[str] = mapped_column(String(64), nullable=False)
    op: Mapped[str] = mapped_column(String(64), nullable=False)
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    result: Mapped[str] = mapped_column(String(300), nullable=False)


def entries(session: Session, *, user: str | None, op: str | None, since: float | None,
            limit: int) -> list[AuditEntry]:
    q = select(AuditEntry)
    if user:
        q = q.where(AuditEntry.user == user)
    if op:
        q = q.where(AuditEntry.op == op)
    if since is not None:
        q = q.where(AuditEntry.at >= since)
    return list(session.scalars(q.order_by(AuditEntry.id.desc()).limit(limit)))
