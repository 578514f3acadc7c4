"""Submit: validate a request completely, then queue it in one transaction.

``submit_many`` validates every request of a batch first, then queues them all in one
transaction (all or none). A client-chosen ``key`` makes a submit idempotent: the same key
from the same user returns the job(s) it already queued instead of queueing again
(``jobs.submit_key`` is unique per user; a batch's jobs get ``<key>/<index>``).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ds01q.db import store
from ds01q.db.models import Job, JobEvent
from ds01q.errors import LimitError, RequestError
from ds01q.faultpoints import crash_point
from ds01q.inventory.sync import known_profiles, possible_profiles, slice_infos
from ds01q.scheduler import check_request
from ds01q.services import arrays, slurm, validate
from ds01q.services.context import Caller, Context
from ds01q.services.views import job_dict
from ds01q.types import JobState, Reason, RequestKind, ResourceRequest
from ds01q.units import format_duration, parse_duration, parse_size

MAX_SCRIPT = 1024 * 1024
MAX_ARGS = 256
MAX_ENV = 128
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "DS01Q_", "SLURM_")
KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
MAX_BATCH = 10_000


def build_request(a: dict[str, Any], default: ResourceRequest) -> ResourceRequest:
    mig, gpus, gpu_mem = a.get("mig"), a.get("gpus"), a.get("gpu_mem")
    if sum(x is not None for x in (mig, gpus, gpu_mem)) > 1:
        raise RequestError("use only one of --mig, --gpus and --gpu-mem")
    if a.get("gpu_model") is not None:
        if mig is not None or gpu_mem is not None or gpus == 0:
            raise RequestError("a GPU model (--gres=gpu:MODEL:N) goes with a number of whole GPUs, not with "
                               "--mig, --gpu-mem or --gpus 0")
        gpus = 1 if gpus is None else gpus
    if gpus is not None:
        if not isinstance(gpus, int) or isinstance(gpus, bool) or not 0 <= gpus <= 64:
            raise RequestError(f"--gpus {gpus!r} is not a whole number of GPUs from 0 to 64")
        return ResourceRequest(kind=RequestKind.NONE, count=0) if gpus == 0 else ResourceRequest(
            kind=RequestKind.GPUS, count=gpus, gpu_model=a.get("gpu_model"))
    if mig is not None:
        profiles = known_profiles()
        if mig not in profiles:
            raise RequestError(f"--mig {mig!r} is not a MIG profile (allowed: {', '.join(sorted(profiles))})")
        return ResourceRequest(kind=RequestKind.MIG, profile=mig)
    if gpu_mem is not None:
        size = parse_size(gpu_mem)
        if size is None or size <= 0:
            raise RequestError(f"--gpu-mem {gpu_mem!r} is not a size like 10g or 512m")
        return ResourceRequest(kind=RequestKind.ANY, min_mem_mb=size // (1024 * 1024))
    return default


def _str(a: dict[str, Any], key: str, maxlen: int = 4096) -> str | None:
    v = a.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > maxlen:
        raise RequestError(f"{key}: must be a string of at most {maxlen} characters")
    return v


def _workdir(ctx: Context, caller: Caller, workdir: str) -> str:
    wd = os.path.realpath(workdir)
    roots = ctx.config.executor.allowed_roots
    if not any(wd == r or wd.startswith(r.rstrip("/") + "/") for r in roots):
        raise RequestError(f"working directory {wd} is outside the allowed roots ({', '.join(roots)})")
    try:
        st = os.stat(wd)
    except OSError:
        raise RequestError(f"working directory {wd} does not exist") from None
    if caller.uid != 0 and st.st_uid != caller.uid and not (st.st_mode & 0o002):
        raise RequestError(f"working directory {wd} is not yours: run from a directory you own")
    return wd


def _env(a: dict[str, Any]) -> dict[str, str]:
    env = a.get("env") or {}
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise RequestError(f"--env: at most {MAX_ENV} KEY=VALUE pairs")
    for k, v in env.items():
        if not ENV_RE.match(str(k)) or not isinstance(v, str) or len(v) > 4096:
            raise RequestError(f"--env {k!r}: names are letters, digits and _, values at most 4096 characters")
        if any(str(k).startswith(r) for r in RESERVED_ENV):
            raise RequestError(f"--env {k}: set by ds01q itself and cannot be overridden")
    return {str(k): str(v) for k, v in env.items()}


@dataclass
class Prepared:
    """A validated request, ready to insert."""

    job: dict[str, Any]  # Job columns
    request: ResourceRequest
    time_s: float
    output: str | None
    hold: bool
    extra: slurm.SlurmFields

    @property
    def plain(self) -> bool:
        """No Slurm extras but an output name with at most %j: what the bulk insert handles."""
        e = self.extra
        return (not (e.array or e.dependency or e.begin or e.chdir or e.error or e.signal or e.mail_user
                     or e.mail_type or e.gpu_model or e.open_mode)
                and "%" not in (self.output or "").replace("%j", ""))


def _key(a: dict[str, Any]) -> str | None:
    key = a.get("key")
    if key is not None and (not isinstance(key, str) or not KEY_RE.match(key)):
        raise RequestError("key: 1-100 characters of letters, digits and _.:- (an idempotency key)")
    return key


def prepare(ctx: Context, caller: Caller, a: dict[str, Any]) -> Prepared:
    """Validate one request completely (nothing touches the database)."""
    cfg = ctx.config
    group = cfg.group_of(caller.user)
    validate.check_types(a, validate.SUBMIT_TYPES)
    interactive = validate.strict_bool(a, "interactive", False)
    hold = validate.strict_bool(a, "hold", False)
    requeue = validate.strict_bool(a, "requeue", not interactive)
    output = validate.output_name(a.get("output"))
    validate.output_name(a.get("error"), "error")
    script = _str(a, "script", MAX_SCRIPT)
    if not interactive and not script:
        raise RequestError("a batch job needs a non-empty script")
    argv = a.get("args") or []
    if not isinstance(argv, list) or len(argv) > MAX_ARGS or not all(isinstance(x, str) for x in argv):
        raise RequestError(f"script arguments: at most {MAX_ARGS} strings")
    name = slurm.check_name(a["name"] if a.get("name") is not None else
                            os.path.basename(_str(a, "script_path") or "shell") or "job")
    extra = slurm.read(a, interactive)
    if output == validate.DISCARD:
        extra.output = None  # no file at all: insert_jobs is told to keep none
    request = build_request(a, group.default_request)
    time_s = group.limits.max_runtime_s if a.get("time") is None else parse_duration(a["time"])
    if time_s is None and a.get("time") is not None:
        raise RequestError(f"--time {a['time']!r} is not a duration like 30m, 24h, 2d or 1-00:00:00")
    time_s = time_s or 7 * 86400.0
    if time_s <= 0:
        raise RequestError("--time must be positive")
    cpus = validate.cpus_within(a.get("cpus"), group.cpus, group.max_cpus)
    mem_arg = a.get("mem")
    if mem_arg is not None and not isinstance(mem_arg, (str, int)) or isinstance(mem_arg, bool):
        raise RequestError("--mem: must be a size like 512m or 32g")
    mem = validate.mem_within(None if mem_arg is None else parse_size(mem_arg), mem_arg, group.mem_bytes,
                              group.max_mem_bytes)
    image = _str(a, "image", 400) or cfg.executor.default_image
    if not cfg.executor.image_allowed(image):
        allowed = ", ".join((cfg.executor.default_image, *cfg.executor.allowed_images))
        raise RequestError(f"--image {image!r} is not allowed (allowed: {allowed})")
    nice = a.get("nice", 0)
    if not isinstance(nice, int) or isinstance(nice, bool) or not 0 <= nice <= 10000:
        raise RequestError(f"--nice {nice!r} must be a whole number from 0 to 10000 (it can only lower priority)")
    workdir = _workdir(ctx, caller, _str(a, "workdir") or "/")
    env = _env(a)
    job = dict(name=name, user=caller.user, uid=caller.uid, gid=caller.gid, group=group.name,
               state=JobState.PENDING.value, reason=Reason.PRIORITY, interactive=interactive,
               request=json.dumps(request.to_dict()), cpus=float(cpus) if cpus else None, mem_bytes=mem,
               time_limit_s=time_s, image=image, script=script, script_path=_str(a, "script_path"),
               args=json.dumps(argv), workdir=workdir, env=json.dumps(env), nice=nice,
               requeue_on_layout_change=requeue)
    return Prepared(job, request, time_s, output, hold, extra)


def _insert(ctx: Context, session: Session, caller: Caller, prepared: list[Prepared],
            keys: list[str | None]) -> list[int]:
    """Check the hard limits and queue the prepared jobs in the caller's transaction, in bulk
    (one multi-row INSERT … RETURNING, one UPDATE, one INSERT of events). A job submitted held
    is inserted HELD with both its events: nobody else can see the row before it commits."""
    _check_limits(ctx, session, caller, prepared)
    now = ctx.clock.now()
    rows = [{**p.job, "submitted_at": now, "submit_key": k, "state": JobState.HELD.value if p.hold else p.job["state"],
             "reason": Reason.HELD if p.hold else p.job["reason"]} for p, k in zip(prepared, keys)]
    ids = [int(r) for r in session.scalars(insert(Job).returning(Job.id, sort_by_parameter_order=True), rows)]
    outputs = []
    events: list[dict[str, Any]] = []
    for job_id, p in zip(ids, prepared):
        if not p.job["interactive"] and p.output != validate.DISCARD:
            out = (p.output or f"ds01q-{job_id}.out").replace("%j", str(job_id))
            outputs.append({"id": job_id, "output_path": os.path.join(p.job["workdir"], out)})
        events.append(dict(job_id=job_id, at=now, state=JobState.PENDING.value, reason="submitted", by=caller.user))
        if p.hold:
            events.append(dict(job_id=job_id, at=now, state=JobState.HELD.value, reason="submitted held",
                               by=caller.user))
    if outputs:
        session.execute(update(Job), outputs)
    session.execute(insert(JobEvent), events)
    return ids


def _check_limits(ctx: Context, session: Session, caller: Caller, prepared: list[Prepared]) -> None:
    """The hard limits and the queue quota, in the insert's transaction (serialised per user)."""
    group = ctx.config.group_of(caller.user)
    limits = ctx.config.limits_for(caller.user)
    if limits.max_queued_jobs is not None:
        store.lock_user(session, caller.user)  # the quota check and the insert are one step per user
    infos = slice_infos(session)
    possible = possible_profiles(infos)
    for i, p in enumerate(prepared):
        refusal = check_request(p.request, limits, tuple(infos), possible, p.time_s, group.name)
        if refusal:
            raise LimitError(refusal if len(prepared) == 1 else f"job {i}: {refusal}")
        slurm.check_gpu_model(p.extra.gpu_model, infos)
    if limits.max_queued_jobs is not None:
        queued = store.count_jobs(session, caller.user, (JobState.PENDING.value, JobState.HELD.value))
        asked = sum(p.extra.tasks for p in prepared)
        if queued + asked > limits.max_queued_jobs:
            raise LimitError(f"you have {queued} jobs queued; max_queued_jobs of group {group.name} "
                             f"is {limits.max_queued_jobs}" + (f" ({asked} more asked)" if asked > 1 else ""))


def _existing(ctx: Context, caller: Caller, keys: list[str]) -> dict[str, tuple[int, float]]:
    """Jobs this user already queued under these keys: key -> (id, time limit)."""
    with ctx.sessions() as session:
        rows = session.execute(select(Job.submit_key, Job.id, Job.time_limit_s)
                               .where(Job.user == caller.user, Job.submit_key.in_(keys)))
        return {str(k): (int(i), float(t)) for k, i, t in rows}


def submit(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    """Queue one job, or all tasks of an array, in one transaction. ``dry_run`` validates fully,
    inserts, and rolls back: the answer is the job that would be queued."""
    key = _key(a)
    dry_run = validate.strict_bool(a, "dry_run", False)
    if key is not None and not dry_run and (old := _existing(ctx, caller, [key]).get(key)):
        return {"id": old[0], "time_limit": format_duration(old[1]), "existing": True}
    p = prepare(ctx, caller, a)
    try:
        with slurm.DryRunGuard() as dry, ctx.sessions.begin() as session:  # a dry run rolls back
            _check_limits(ctx, session, caller, [p])
            slurm.check_dependencies(session, p.extra, dry_run=dry_run)
            now = ctx.clock.now()
            fields = {**p.job, "submitted_at": now, "submit_key": None if dry_run else key}
            job, count = arrays.insert_jobs(
                session, fields, p.extra, now=now, by=caller.user, hold=p.hold,
                discard_output=p.output == validate.DISCARD,
                check_workdir=slurm.lenient(lambda wd: _workdir(ctx, caller, wd), p.extra, dry_run=dry_run))
            job_id = job.id
            result: dict[str, Any] = {"id": job_id, "time_limit": format_duration(p.time_s),
                                      "warnings": p.extra.warnings}
            if p.extra.array:
                result["array"] = {"job_id": job_id, "tasks": count, "throttle": p.extra.array["throttle"]}
            if dry_run:
                view = job_dict(job, [], None, private=True)
                view.update(slurm.view_extras(job, p.extra))
                view.update(id=None, provisional_id=job_id, warnings=p.extra.warnings, dry_run=True)
                if p.output == validate.DISCARD:
                    view["output"] = validate.DISCARD  # what Slurm shows; no file is kept
                raise slurm.DryRun(view)
    except IntegrityError:  # the same key, submitted at the same moment: the first one won
        old = _existing(ctx, caller, [key]).get(key) if key is not None else None
        if old is None:
            raise
        return {"id": old[0], "time_limit": format_duration(old[1]), "existing": True}
    if dry.result is not None:
        return dry.result
    crash_point("submit")  # committed, not yet answered (tests/faults)
    ctx.wake()
    return result


def submit_many(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    """Queue a list of plain requests (``jobs``) in one transaction: all of them or, on any error, none.
    Arrays, dependencies and Slurm's file options go through ``submit``, one request each."""
    items = a.get("jobs")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise RequestError(f"jobs: a list of 1 to {MAX_BATCH} submit requests")
    key = _key(a)
    keys = [f"{key}/{i}" for i in range(len(items))] if key is not None else [None] * len(items)
    if key is not None:
        old = _existing(ctx, caller, [k for k in keys if k])
        if old:
            if len(old) != len(items):
                raise RequestError(f"key {key} was already used for a different batch")
            return {"ids": [old[k][0] for k in keys if k], "existing": True}
    prepared = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(f"job {i}: a submit request must be a JSON object")
        try:
            p = prepare(ctx, caller, item)
        except RequestError as e:
            raise type(e)(f"job {i}: {e}") from None
        if not p.plain:
            raise RequestError(f"job {i}: submit_many takes plain jobs; submit arrays, dependencies, --begin, "
                               "--chdir, --error and %-patterns other than %j one request each")
        prepared.append(p)
    try:
        with ctx.sessions.begin() as session:
            ids = _insert(ctx, session, caller, prepared, keys)
    except IntegrityError:
        old = _existing(ctx, caller, [k for k in keys if k]) if key is not None else {}
        if len(old) != len(items):
            raise
        return {"ids": [old[k][0] for k in keys if k], "existing": True}
    crash_point("submit")  # committed, not yet answered (tests/faults)
    ctx.wake()
    return {"ids": ids}
