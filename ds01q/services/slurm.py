"""Submit's Slurm options: validate what ``#SBATCH`` lines and sbatch's flags add to a request.

The client parses a script's directives (``client.directives``), but the daemon trusts nothing it is sent:
each key is checked here again, with one-line errors, before ``services.submit`` queues anything. Keys
(the forms ``client.directives`` emits; string forms as sbatch takes them are accepted too):

    name        any printable characters, at most 200 (control characters refused)
    output, error, chdir   file/directory names with Slurm's %-patterns (expanded per job by ``paths``)
    open_mode   append | truncate             mail_user, mail_type   recorded with the job
    array       {"indices": [...], "throttle": N|None} or "0-99%4"
    dependency  {"mode": "all"|"any", "items": [...]} or "afterok:12,singleton"
    begin       {"kind": "delay"|"time"|"date", ...} or "now+1hour" → the job's ``eligible_at``
    signal      {"signal": "USR1", "seconds": 60, "batch_only": bool} or "B:USR1@60" (controller/signals.py)
    export      {"mode": ..., "names": [...]}: the client copies the named variables into ``env``
    gpu_model   a GPU model (a100, h100, titanrtx…) that some GPU of the inventory must be named after
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ds01q import slurm_values as sv
from ds01q.db.models import Job
from ds01q.errors import RequestError
from ds01q.types import SliceInfo, gpu_model_key

MAX_NAME = 200
MAX_DEP_ITEMS = 100
MAX_DEP_JOBS = 1000
DEFAULT_OUTPUT = "ds01q-%j.out"
DEFAULT_ARRAY_OUTPUT = "ds01q-%A_%a.out"
_OWN_ID = re.compile(r"%\d*[jJ]")


class DryRun(Exception):
    """Raised inside submit's transaction to roll it back and hand out the job that would be queued."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("dry run")
        self.result = result


class DryRunGuard:
    """``with DryRunGuard() as dry, sessions.begin() as session:`` — a ``DryRun`` raised inside rolls the
    transaction back and ends up in ``dry.result``."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None

    def __enter__(self) -> DryRunGuard:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, DryRun):
            self.result = exc.result
            return True
        return False


@dataclass
class SlurmFields:
    output: str | None = None
    error: str | None = None
    chdir: str | None = None
    open_mode: str | None = None
    mail_user: str | None = None
    mail_type: list[str] = field(default_factory=list)
    array: dict[str, Any] | None = None
    dependency: dict[str, Any] | None = None
    begin: dict[str, Any] | None = None
    signal: dict[str, Any] | None = None
    gpu_model: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        return len(self.array["indices"]) if self.array else 1


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise RequestError(f"--job-name {str(name)[:60]!r}: a job name is 1 to {MAX_NAME} printable characters "
                           "(no control characters)")
    return name


def _text(a: dict[str, Any], key: str, maxlen: int = 4096) -> str | None:
    v = a.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > maxlen or not v.isprintable():
        raise RequestError(f"--{key.replace('_', '-')}: must be 1 to {maxlen} printable characters")
    return v


def _whole(v: Any, what: str, least: int, most: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not least <= v <= most:
        raise RequestError(f"{what} {v!r} must be a whole number from {least} to {most}")
    return v


def _array(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return sv.parse_array(v)
        except RequestError as e:
            raise RequestError(f"--array: {e}") from None
    if not isinstance(v, dict) or not isinstance(v.get("indices"), list):
        raise RequestError("--array: give indices like 0-99%4 (N, N-M, N-M:STEP, commas, %MAX_RUNNING)")
    indices = v["indices"]
    if not 1 <= len(indices) <= sv.MAX_ARRAY_TASKS:
        raise RequestError(f"--array: 1 to {sv.MAX_ARRAY_TASKS} tasks in one array")
    for i in indices:
        _whole(i, "--array index", 0, sv.MAX_ARRAY_INDEX)
    if len(set(indices)) != len(indices):
        raise RequestError("--array: an index appears twice")
    throttle = v.get("throttle")
    if throttle is not None:
        _whole(throttle, "--array %throttle", 1, sv.MAX_ARRAY_TASKS)
    return {"indices": sorted(indices), "throttle": throttle}


def _dependency(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return sv.parse_dependency(v)
        except RequestError as e:
            raise RequestError(f"--dependency: {e}") from None
    allowed = f"types: {', '.join(sv.DEPENDENCY_TYPES)}"
    if not isinstance(v, dict) or v.get("mode", "all") not in ("all", "any") or not isinstance(v.get("items"), list):
        raise RequestError(f"--dependency: give TYPE:JOBID[:JOBID...] joined by , or ? ({allowed})")
    items = v["items"]
    if not 1 <= len(items) <= MAX_DEP_ITEMS:
        raise RequestError(f"--dependency: 1 to {MAX_DEP_ITEMS} dependencies")
    out = []
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in sv.DEPENDENCY_TYPES:
            raise RequestError(f"--dependency: {kind!r} is not a dependency type ({allowed})")
        if kind == "singleton":
            out.append({"type": "singleton"})
            continue
        jobs = item.get("jobs")
        if not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_DEP_JOBS:
            raise RequestError(f"--dependency: {kind} needs 1 to {MAX_DEP_JOBS} job ids")
        refs = []
        for ref in jobs:
            if not isinstance(ref, dict) or set(ref) - {"id", "task", "delay_min"}:
                raise RequestError(f"--dependency: {ref!r} is not a job id")
            clean = {"id": _whole(ref.get("id"), "--dependency job id", 1, 2**31 - 1)}
            if "task" in ref:
                clean["task"] = _whole(ref["task"], "--dependency array task", 0, sv.MAX_ARRAY_INDEX)
            if "delay_min" in ref:
                if kind != "after":
                    raise RequestError("--dependency: +MINUTES is allowed only with after (after:JOBID+MINUTES)")
                clean["delay_min"] = _whole(ref["delay_min"], "--dependency delay", 0, 10**6)
            refs.append(clean)
        out.append({"type": kind, "jobs": refs})
    return {"mode": v.get("mode", "all"), "items": out}


def _begin(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return sv.parse_begin(v)
        except RequestError as e:
            raise RequestError(f"--begin: {e}") from None
    if isinstance(v, dict):
        kind = v.get("kind")
        try:
            if kind == "delay":
                return {"kind": "delay", "seconds": _whole(v.get("seconds"), "--begin delay", 0, 10**9)}
            if kind == "time" and isinstance(v.get("time"), str):
                dt.time.fromisoformat(v["time"])
                return {"kind": "time", "time": v["time"]}
            if kind == "date" and isinstance(v.get("at"), str):
                dt.datetime.fromisoformat(v["at"])
                return {"kind": "date", "at": v["at"]}
        except ValueError:
            pass
    raise RequestError("--begin: give now+N[minutes|hours|days], HH:MM[:SS] or YYYY-MM-DD[THH:MM[:SS]]")


def begin_at(begin: dict[str, Any] | None, now: float) -> float:
    """The time a --begin value means, given the server's clock (local time for clock times and dates)."""
    if begin is None:
        return 0.0
    if begin["kind"] == "delay":
        return now + begin["seconds"]
    local = dt.datetime.fromtimestamp(now)
    if begin["kind"] == "time":
        t = dt.time.fromisoformat(begin["time"])
        at = dt.datetime.combine(local.date(), t)
        if at.timestamp() <= now:
            at += dt.timedelta(days=1)
        return at.timestamp()
    return dt.datetime.fromisoformat(begin["at"]).timestamp()


def _signal(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    text = v if isinstance(v, str) else None
    if isinstance(v, dict) and isinstance(v.get("signal"), str) and isinstance(v.get("seconds", 60), int):
        text = ("B:" if v.get("batch_only") else "") + f"{v['signal']}@{v.get('seconds', 60)}"
    if text is None:
        raise RequestError("--signal: give [B:]SIGNAL[@SECONDS], e.g. B:USR1@120")
    try:
        sig = sv.parse_signal(text)
    except RequestError as e:
        raise RequestError(f"--signal: {e}") from None
    sig.pop("reservation", None)
    return sig


def _mail_type(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        v = v.split(",")
    if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
        raise RequestError("--mail-type: a list of mail types such as BEGIN,END,FAIL")
    try:
        return sv.parse_mail_types(",".join(v)) if v else []
    except RequestError as e:
        raise RequestError(f"--mail-type: {e}") from None


def _export(v: Any) -> None:
    if v is None:
        return
    if (not isinstance(v, dict) or v.get("mode") not in ("ALL", "NONE", "NIL")
            or not isinstance(v.get("names", []), list) or len(v.get("names", [])) > 128):
        raise RequestError("--export: give ALL, NONE, NIL or [ALL,]VAR[=value],...")


def read(a: dict[str, Any], interactive: bool) -> SlurmFields:
    """Validate the Slurm keys of a submit request (no database)."""
    f = SlurmFields(output=_text(a, "output"), error=_text(a, "error"), chdir=_text(a, "chdir"),
                    mail_user=_text(a, "mail_user", 256), mail_type=_mail_type(a.get("mail_type")),
                    array=_array(a.get("array")), dependency=_dependency(a.get("dependency")),
                    begin=_begin(a.get("begin")), signal=_signal(a.get("signal")),
                    gpu_model=_text(a, "gpu_model", 64))
    _export(a.get("export"))
    if f.mail_user is not None and (f.mail_user.startswith("-") or any(c.isspace() for c in f.mail_user)):
        raise RequestError(f"--mail-user {f.mail_user[:80]!r}: give one address or user name, without blanks "
                           "and not starting with '-'")
    mode = a.get("open_mode")
    if mode is not None and mode not in ("append", "truncate"):
        raise RequestError(f"--open-mode {mode!r}: allowed: append, truncate")
    f.open_mode = mode
    if interactive and (f.array or f.output or f.error):
        raise RequestError("--array, --output and --error are for batch jobs, not interactive shells")
    if f.gpu_model is not None and not gpu_model_key(f.gpu_model):
        raise RequestError(f"--gres: {f.gpu_model!r} is not a GPU model (like a100, h100)")
    return f


def check_gpu_model(model: str | None, infos: list[SliceInfo]) -> None:
    """A one-line error when no GPU of the inventory is named after ``model``."""
    if not model:
        return
    if not any(s.is_model(model) for s in infos):
        names = sorted({s.gpu_name for s in infos if s.gpu_name}) or ["none"]
        raise RequestError(f"no GPU here is a {model!r} (GPUs: {', '.join(names)}; or ask for a MIG profile)")


REFUSED_LATER = "a real submit would be refused now: "


def check_dependencies(session: Session, f: SlurmFields, dry_run: bool = False) -> None:
    """Every job a dependency names exists (Slurm refuses the submit otherwise; a dry run warns)."""
    if not f.dependency:
        return
    ids = {int(j["id"]) for item in f.dependency["items"] for j in item.get("jobs", ())}
    found = set(session.scalars(select(Job.id).where(Job.id.in_(ids)))) if ids else set()
    missing = sorted(ids - found)
    if missing:
        message = f"--dependency: job {missing[0]} does not exist (Slurm: Job dependency problem)"
        if not dry_run:
            raise RequestError(message)
        f.warnings.append(REFUSED_LATER + message)


def lenient(check: Callable[[str], str], f: SlurmFields, dry_run: bool) -> Callable[[str], str]:
    """``check`` (a --chdir directory), turned into a warning for a dry run: whether it exists is a fact of the
    moment of submit, not of the script."""
    if not dry_run:
        return check

    def warn(wd: str) -> str:
        try:
            return check(wd)
        except RequestError as e:
            f.warnings.append(f"{REFUSED_LATER}--chdir: {e}")
            return wd

    return warn


def paths(f: SlurmFields, workdir: str, *, job_id: int, name: str, user: str, array_job_id: int | None = None,
          task: int | None = None) -> tuple[str, str | None, str | None]:
    """(workdir, output path, error path) of one job, %-patterns expanded; relative names are in the workdir."""
    def expand(p: str) -> str:
        return sv.expand_pattern(p, job_id=job_id, name=name, user=user, array_job_id=array_job_id,
                                 array_task_id=task)

    wd = os.path.normpath(os.path.join(workdir, expand(f.chdir))) if f.chdir else workdir
    out = f.output or (DEFAULT_ARRAY_OUTPUT if task is not None else DEFAULT_OUTPUT)
    output = _inside(wd, expand(out), "output")
    error = _inside(wd, expand(f.error), "error") if f.error else None
    return wd, output, error


def _inside(wd: str, name: str, key: str) -> str:
    """``name`` joined to the workdir; refused if it leaves it (a job name with ``/`` or ``..`` in %x)."""
    path = os.path.normpath(os.path.join(wd, name))
    if os.path.isabs(name) or os.path.commonpath([wd, path]) != os.path.normpath(wd) or path == os.path.normpath(wd):
        raise RequestError(f"--{key} {name[:80]!r}: the file must be a name inside the working directory "
                           "(after %-patterns are expanded)")
    return path


def needs_id(f: SlurmFields) -> bool:
    """Do this job's file names depend on its own id (so an array task's must be computed after insert)?"""
    return any(_OWN_ID.search(n) for n in (f.chdir or "", f.error or "", f.output or DEFAULT_ARRAY_OUTPUT))


def columns(f: SlurmFields) -> dict[str, Any]:
    """The Job columns these options set (besides paths and array ids)."""
    return {"open_mode": f.open_mode, "mail_user": f.mail_user,
            "mail_type": ",".join(f.mail_type) or None,
            "signal": json.dumps(f.signal) if f.signal else None,
            "depends_on": json.dumps(f.dependency) if f.dependency else "[]"}


def view_extras(job: Job, f: SlurmFields) -> dict[str, Any]:
    """What ``show --json`` adds for Slurm options: array, dependencies, error file, mail, signal."""
    return {"array": ({"job_id": job.array_id, "indices": f.array["indices"], "throttle": f.array["throttle"],
                       "tasks": len(f.array["indices"])} if f.array else None),
            "dependencies": f.dependency, "error": job.error_path, "open_mode": job.open_mode,
            "mail_user": job.mail_user, "mail_type": f.mail_type, "signal": f.signal,
            "eligible_at": job.eligible_at or None}

