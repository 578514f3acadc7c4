"""Submit: validate a request completely, then queue it in one transaction."""
from __future__ import annotations

import json
import os
import re
from typing import Any

from ds01q.db import store
from ds01q.errors import LimitError, RequestError
from ds01q.services import arrays, slurm
from ds01q.scheduler import check_request
from ds01q.services.context import Caller, Context
from ds01q.inventory.sync import known_profiles, possible_profiles, slice_infos
from ds01q.services.views import job_dict
from ds01q.types import JobState, Reason, RequestKind, ResourceRequest
from ds01q.units import format_duration, parse_duration, parse_size

MAX_SCRIPT = 1024 * 1024
MAX_ARGS = 256
MAX_ENV = 128
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "DS01Q_", "SLURM_")


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


def submit(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    cfg = ctx.config
    group = cfg.group_of(caller.user)
    interactive = bool(a.get("interactive", False))
    script = _str(a, "script", MAX_SCRIPT)
    if not interactive and not script:
        raise RequestError("a batch job needs a non-empty script")
    argv = a.get("args") or []
    if not isinstance(argv, list) or len(argv) > MAX_ARGS or not all(isinstance(x, str) for x in argv):
        raise RequestError(f"script arguments: at most {MAX_ARGS} strings")
    name = slurm.check_name(a["name"] if a.get("name") is not None else
                            os.path.basename(_str(a, "script_path") or "shell") or "job")
    extra = slurm.read(a, interactive)
    request = build_request(a, group.default_request)
    time_s = group.limits.max_runtime_s if a.get("time") is None else parse_duration(a["time"])
    if time_s is None and a.get("time") is not None:
        raise RequestError(f"--time {a['time']!r} is not a duration like 30m, 24h, 2d or 1-00:00:00")
    time_s = time_s or 7 * 86400.0
    if time_s <= 0:
        raise RequestError("--time must be positive")
    cpus = a.get("cpus", group.cpus)
    if cpus is not None and (not isinstance(cpus, (int, float)) or isinstance(cpus, bool) or not 0 < cpus <= 1024):
        raise RequestError(f"--cpus {cpus!r} is not a number of CPUs from 0.01 to 1024")
    mem = group.mem_bytes if a.get("mem") is None else parse_size(a["mem"])
    if a.get("mem") is not None and (mem is None or mem < 4 * 1024 * 1024):
        raise RequestError(f"--mem {a['mem']!r} is not a size of at least 4m, like 512m or 32g")
    image = _str(a, "image", 400) or cfg.executor.default_image
    if not cfg.executor.image_allowed(image):
        allowed = ", ".join((cfg.executor.default_image, *cfg.executor.allowed_images))
        raise RequestError(f"--image {image!r} is not allowed (allowed: {allowed})")
    nice = a.get("nice", 0)
    if not isinstance(nice, int) or isinstance(nice, bool) or not 0 <= nice <= 10000:
        raise RequestError(f"--nice {nice!r} must be a whole number from 0 to 10000 (it can only lower priority)")
    workdir = _workdir(ctx, caller, _str(a, "workdir") or "/")
    env = _env(a)
    limits = cfg.limits_for(caller.user)
    with slurm.DryRunGuard() as dry, ctx.sessions.begin() as session:  # a dry run rolls back
        infos = slice_infos(session)
        refusal = check_request(request, limits, tuple(infos), possible_profiles(infos), time_s, group.name)
        if refusal:
            raise LimitError(refusal)
        if limits.max_queued_jobs is not None:
            queued = store.count_jobs(session, caller.user, (JobState.PENDING.value, JobState.HELD.value))
            if queued + extra.tasks > limits.max_queued_jobs:
                raise LimitError(f"you have {queued} jobs queued; max_queued_jobs of group {group.name} "
                                 f"is {limits.max_queued_jobs}")
        slurm.check_gpu_model(extra.gpu_model, infos)
        slurm.check_dependencies(session, extra, dry_run=bool(a.get("dry_run")))
        now = ctx.clock.now()
        fields = dict(name=name, user=caller.user, uid=caller.uid, gid=caller.gid, group=group.name,
                      state=JobState.PENDING.value, reason=Reason.PRIORITY, interactive=interactive,
                      request=json.dumps(request.to_dict()), cpus=float(cpus) if cpus else None, mem_bytes=mem,
                      time_limit_s=time_s, image=image, script=script, script_path=_str(a, "script_path"),
                      args=json.dumps(argv), workdir=workdir, env=json.dumps(env), submitted_at=now, nice=nice,
                      requeue_on_layout_change=bool(a.get("requeue", not interactive)))
        job, count = arrays.insert_jobs(session, fields, extra, now=now, by=caller.user, hold=bool(a.get("hold")),
                                        check_workdir=slurm.lenient(lambda wd: _workdir(ctx, caller, wd), extra,
                                                                    dry_run=bool(a.get("dry_run"))))
        job_id = job.id
        result: dict[str, Any] = {"id": job_id, "time_limit": format_duration(time_s), "warnings": extra.warnings}
        if extra.array:
            result["array"] = {"job_id": job_id, "tasks": count, "throttle": extra.array["throttle"]}
        if a.get("dry_run"):
            view = job_dict(job, [], None, private=True)
            view.update(slurm.view_extras(job, extra))
            view.update(id=None, provisional_id=job_id, warnings=extra.warnings, dry_run=True)
            raise slurm.DryRun(view)
    if dry.result is not None:
        return dry.result
    ctx.wake()
    return result
