"""Between the database and an executor: build a job's LaunchSpec (environment, spooled script, mounts)."""
from __future__ import annotations

import json
import os
import shlex

from ds01q.config import Config
from ds01q.executors.base import KEEPALIVE_COMMAND, LaunchSpec
from ds01q.executors.cgroups import cgroup_parent
from ds01q.db.models import Allocation, Job

KEEPALIVE = KEEPALIVE_COMMAND  # one definition: the executors run it for interactive jobs
SCRIPT_IN_CONTAINER = "/ds01q/job"


def job_env(job: Job, allocs: list[Allocation]) -> dict[str, str]:
    uuids = ",".join(a.slice_uuid for a in allocs)
    profiles = ",".join(sorted({a.profile for a in allocs}))
    env = dict(json.loads(job.env or "{}"))
    env.update({
        "CUDA_VISIBLE_DEVICES": uuids,
        "DS01Q_JOB_ID": str(job.id),
        "DS01Q_SLICES": uuids,
        "DS01Q_GPU_PROFILE": profiles,
        "SLURM_JOB_ID": str(job.id),
        "SLURM_JOB_NAME": job.name,
        "SLURM_SUBMIT_DIR": job.workdir,
        "USER": job.user,
        "LOGNAME": job.user,
        "HOME": job.workdir,
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    })
    env.update(slurm_env(job, allocs))
    return env


def slurm_env(job: Job, allocs: list[Allocation]) -> dict[str, str]:
    """The rest of sbatch's environment: array task, CPUs, memory (MiB), GPUs (0..n-1 as the job sees them:
    its devices are the only ones visible), one node, one task."""
    env = {"SLURM_JOBID": str(job.id), "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "1",
           "SLURM_NPROCS": "1", "SLURM_JOB_NODELIST": job.node or "localhost",
           "SLURMD_NODENAME": job.node or "localhost", "SLURM_JOB_USER": job.user,
           "SLURM_JOB_PARTITION": job.group}
    if job.array_id is not None and job.array_task_id is not None:
        env.update(SLURM_ARRAY_JOB_ID=str(job.array_id), SLURM_ARRAY_TASK_ID=str(job.array_task_id))
    if job.cpus:
        env["SLURM_CPUS_PER_TASK"] = str(int(job.cpus) if float(job.cpus).is_integer() else job.cpus)
        env["SLURM_CPUS_ON_NODE"] = str(max(1, int(job.cpus)))
    if job.mem_bytes:
        env["SLURM_MEM_PER_NODE"] = str(job.mem_bytes // (1024 * 1024))
    if allocs:
        gpus = ",".join(str(i) for i in range(len(allocs)))
        env.update(SLURM_JOB_GPUS=gpus, SLURM_GPUS_ON_NODE=str(len(allocs)), SLURM_STEP_GPUS=gpus)
    return env


def spool_script(cfg: Config, job: Job) -> str:
    """Write the job's script where only its owner can read it; return the host path."""
    d = os.path.join(cfg.executor.state_dir, "scripts")
    os.makedirs(d, mode=0o711, exist_ok=True)
    os.chmod(d, 0o711)
    path = os.path.join(d, f"{job.id}.sh")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o500)
    with os.fdopen(fd, "w") as f:
        f.write(job.script or "")
    if os.geteuid() == 0:
        os.chown(path, job.uid, job.gid)
    os.chmod(path, 0o500)
    return path


def command_for(job: Job, script: str) -> list[str]:
    args = json.loads(job.args or "[]")
    first = (job.script or "").split("\n", 1)[0]
    if first.startswith("#!"):
        return [*shlex.split(first[2:].strip()), script, *args]
    return ["/bin/sh", script, *args]


def truncates(job: Job) -> bool:
    """Slurm's ``--open-mode``: truncate (its default) empties the output and error files when a job first
    runs; a requeued job appends, as Slurm does, so the first run's output is kept; append never empties."""
    if job.open_mode == "append":
        return False
    return job.open_mode == "truncate" or not job.requeue_count


def launch_spec(cfg: Config, job: Job, allocs: list[Allocation], cgroup_driver: str | None) -> LaunchSpec:
    ex = cfg.executor
    group = cfg.groups.get(job.group) or cfg.group_of(job.user)
    mounts: list[tuple[str, str, str]] = []
    if job.interactive:
        command = list(KEEPALIVE)
    else:
        host = spool_script(cfg, job)
        in_job = SCRIPT_IN_CONTAINER if ex.kind == "docker" else host
        if ex.kind == "docker":
            mounts.append((host, SCRIPT_IN_CONTAINER, "ro"))
        command = command_for(job, in_job)
    parent = (cgroup_parent(cgroup_driver, ex.cgroup_root, job.group, job.user, ex.cgroup_scheme)
              if cgroup_driver else None)
    return LaunchSpec(
        job_id=job.id, name=job.name, user=job.user, uid=job.uid, gid=job.gid, group=job.group,
        image=job.image, command=command, workdir=job.workdir, env=job_env(job, allocs),
        slices=[a.slice_uuid for a in allocs], gpu_runtime=ex.gpu_runtime, cpus=job.cpus, mem_bytes=job.mem_bytes,
        pids_limit=group.pids_limit, shm_bytes=group.shm_bytes, output_path=job.output_path,
        error_path=job.error_path, truncate=truncates(job),
        cgroup_parent=parent, interactive=job.interactive, stop_grace_s=ex.stop_grace_s, mounts=mounts,
        attempt=job.launch_attempt,
    )
