"""``--mail-type``/``--mail-user``: run the admins' notification hook (``notify.command``, Slurm's MailProg).

Off unless ``notify.command`` is set. The controller reads the job events written since its last look
(a cursor on ``job_events.id``; it starts at the newest event when the daemon starts or the hook is
turned on, so a restart never repeats a notification, and events while it was down are not notified) and, for each job that
asked for that kind of event, runs the hook:

    argv    COMMAND -s "ds01q Job_id=42 Name=train Ended, Run time 00:10:02, COMPLETED, ExitCode 0" MAIL_USER
            (what Slurm passes its MailProg, so ``command: /usr/bin/mail`` works as it does for Slurm)
    env     DS01Q_JOB_ID, DS01Q_JOB_NAME, DS01Q_JOB_USER, DS01Q_JOB_STATE, DS01Q_MAIL_USER,
            DS01Q_MAIL_TYPE (BEGIN, END, FAIL, REQUEUE, TIME_LIMIT, TIME_LIMIT_50/80/90, INVALID_DEPEND),
            DS01Q_EXIT_CODE, DS01Q_REASON, SLURM_JOB_ID, SLURM_JOB_NAME, SLURM_JOB_USER, SLURM_JOB_STATE,
            SLURM_JOB_MAIL_TYPE, PATH=/usr/bin:/bin
    stdin   the same as one JSON object

as ``notify.user`` (an unprivileged account; never root: the config refuses it, and a uid 0 account is
refused here too), with no shell, no inherited descriptors, its working directory ``/``, at most
``notify.timeout`` (then killed), at most ``MAX_RUNNING`` at once off the loop's thread. Its output is
logged (one line), never shown to users. ``MAIL_USER`` is the job's ``--mail-user`` or its user's name;
a ``--mail-user`` that is not a plain address (``services.slurm`` refuses such at submit) is not used.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import re
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from ds01q.db.models import Job, JobEvent
from ds01q.types import JobState

log = logging.getLogger("ds01q.notify")
S = JobState
MAX_RUNNING = 4
BATCH = 500
ADDRESS = re.compile(r"^[^\s\-][^\s]{0,255}$")  # no blanks, never a leading '-': it cannot pass as an option
FAILED = {S.FAILED.value, S.TIMEOUT.value, S.OUT_OF_MEMORY.value, S.NODE_FAIL.value}
ALL = {"BEGIN", "END", "FAIL", "REQUEUE", "INVALID_DEPEND"}  # Slurm's ALL (STAGE_OUT has no meaning here)
PERCENTS = {"TIME_LIMIT_50": 0.5, "TIME_LIMIT_80": 0.8, "TIME_LIMIT_90": 0.9}


def wanted(job: Job) -> set[str]:
    types = {t for t in (job.mail_type or "").split(",") if t}
    if "ALL" in types:
        types |= ALL
    return types


def kinds_of(event: JobEvent) -> list[str]:
    """The mail types an event stands for."""
    reason = event.reason or ""
    if event.state == S.RUNNING.value and not reason.startswith("signal "):
        return ["BEGIN"]
    if event.state == S.PENDING.value and reason.startswith("requeued"):
        return ["REQUEUE"]
    if event.state in FAILED or event.state in (S.COMPLETED.value, S.CANCELLED.value):
        out = ["END"]
        if event.state in FAILED:
            out.append("FAIL")
        if event.state == S.TIMEOUT.value:
            out.append("TIME_LIMIT")
        return out
    return []


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def subject(job: Job, kind: str, now: float) -> str:
    head = f"ds01q Job_id={job.id} Name={job.name}"
    ran = _hms((job.ended_at or now) - job.started_at) if job.started_at else "00:00:00"
    if kind == "BEGIN":
        return f"{head} Began, Queued time {_hms(now - job.submitted_at)}"
    if kind == "REQUEUE":
        return f"{head} Failed, Run time {ran}, REQUEUED"
    if kind.startswith("TIME_LIMIT_"):
        return f"{head} Reached {kind[11:]}% of time limit, Run time {ran}"
    word = "Failed" if kind in ("FAIL", "TIME_LIMIT") else "Ended"
    return f"{head} {word}, Run time {ran}, {job.state}, ExitCode {job.exit_code if job.exit_code is not None else '-'}"


@dataclass
class Notifier:
    """The controller's notification step; ``inline`` runs hooks on the caller's thread (tests)."""

    inline: bool = False
    cursor: int | None = None
    reached: set[tuple[int, float, str]] = field(default_factory=set)  # (job, run start, TIME_LIMIT_nn) sent
    slots: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(MAX_RUNNING))

    def step(self, ctl: Any, now: float) -> None:
        cfg = ctl.config.notify
        if not cfg.command:  # off: nothing read; turned on (a reload), it starts from then
            self.cursor = None
            return
        with ctl.session() as session:
            if self.cursor is None:  # first look: start after what is already there
                self.cursor = session.scalar(select(func.max(JobEvent.id))) or 0
            rows = list(session.execute(
                select(JobEvent, Job).join(Job, Job.id == JobEvent.job_id)
                .where(JobEvent.id > self.cursor).order_by(JobEvent.id).limit(BATCH)))
            todo: list[tuple[dict[str, Any], str]] = []
            for event, job in rows:
                self.cursor = max(self.cursor, event.id)
                want = wanted(job)
                for kind in kinds_of(event) if want else []:
                    if kind in want:
                        todo.append(self.message(job, kind, event.state, event.reason, now))
            todo += self._time_limits(session, now)
        for msg in todo:
            self.run(cfg, msg)

    def _time_limits(self, session: Any, now: float) -> list[tuple[dict[str, Any], str]]:
        out = []
        jobs = list(session.scalars(select(Job).where(Job.state == S.RUNNING.value,
                                                      Job.mail_type.like("%TIME_LIMIT_%"))))
        self.reached = {k for k in self.reached if k[0] in {j.id for j in jobs}}
        for job in jobs:
            if job.started_at is None:
                continue
            for kind in wanted(job) & PERCENTS.keys():
                key = (job.id, job.started_at, kind)
                if key not in self.reached and now >= job.started_at + PERCENTS[kind] * job.time_limit_s:
                    self.reached.add(key)
                    out.append(self.message(job, kind, job.state, None, now))
        return out

    @staticmethod
    def message(job: Job, kind: str, state: str, reason: str | None, now: float) -> tuple[dict[str, Any], str]:
        to = job.mail_user or job.user
        if not ADDRESS.match(to):
            log.warning("job %s: --mail-user %r is not a plain address; notifying %s", job.id, to, job.user)
            to = job.user
        event = {"job_id": job.id, "name": job.name, "user": job.user, "state": state, "mail_user": to,
                 "mail_type": kind, "exit_code": job.exit_code, "reason": reason or job.end_reason or "",
                 "array_job_id": job.array_id, "array_task_id": job.array_task_id}
        return event, subject(job, kind, now)

    def run(self, cfg: Any, msg: tuple[dict[str, Any], str]) -> None:
        if self.inline:
            run_hook(cfg, *msg)
            return
        if not self.slots.acquire(blocking=False):
            log.warning("notify: %d hooks still running; job %s %s not notified", MAX_RUNNING,
                        msg[0]["job_id"], msg[0]["mail_type"])
            return

        def go() -> None:
            try:
                run_hook(cfg, *msg)
            finally:
                self.slots.release()

        threading.Thread(target=go, name="ds01q-notify", daemon=True).start()


def hook_env(event: dict[str, Any]) -> dict[str, str]:
    def text(v: Any) -> str:
        return "" if v is None else str(v).replace("\0", "")

    return {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
        "DS01Q_JOB_ID": text(event["job_id"]), "DS01Q_JOB_NAME": text(event["name"]),
        "DS01Q_JOB_USER": text(event["user"]), "DS01Q_JOB_STATE": text(event["state"]),
        "DS01Q_MAIL_USER": text(event["mail_user"]), "DS01Q_MAIL_TYPE": text(event["mail_type"]),
        "DS01Q_EXIT_CODE": text(event["exit_code"]), "DS01Q_REASON": text(event["reason"])[:1000],
        "SLURM_JOB_ID": text(event["job_id"]), "SLURM_JOB_NAME": text(event["name"]),
        "SLURM_JOB_USER": text(event["user"]), "SLURM_JOB_STATE": text(event["state"]),
        "SLURM_JOB_MAIL_TYPE": text(event["mail_type"]),
    }


def run_hook(cfg: Any, event: dict[str, Any], subj: str) -> int | None:
    """Run ``cfg.command`` once for ``event``; its exit code, or None when it could not run or timed out."""
    try:
        pw = pwd.getpwnam(cfg.user)
    except KeyError:
        log.warning("notify: user %r does not exist; job %s %s not notified", cfg.user, event["job_id"],
                    event["mail_type"])
        return None
    if pw.pw_uid == 0:
        log.warning("notify: user %r is root; the hook never runs as root", cfg.user)
        return None
    ids: dict[str, Any] = {}
    if os.geteuid() == 0:
        ids = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    elif os.geteuid() != pw.pw_uid:
        log.warning("notify: the daemon is not root and cannot run the hook as %r", cfg.user)
        return None
    try:
        proc = subprocess.Popen([cfg.command, "-s", subj, event["mail_user"]], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=hook_env(event), cwd="/",
                                close_fds=True, start_new_session=True, **ids)
    except OSError as e:
        log.warning("notify: cannot run %s: %s", cfg.command, e.strerror or e)
        return None
    try:
        out, _ = proc.communicate(json.dumps(event).encode(), timeout=cfg.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        log.warning("notify: %s ran past %.0fs and was killed (job %s %s)", cfg.command, cfg.timeout_s,
                    event["job_id"], event["mail_type"])
        return None
    if proc.returncode != 0:
        text = " ".join(out.decode(errors="replace").split())[:300]
        log.warning("notify: %s exited %s for job %s %s: %s", cfg.command, proc.returncode, event["job_id"],
                    event["mail_type"], text)
    return proc.returncode


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The hook and everything it started in its session; pipes a straggler holds are closed, not waited on."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()
