"""The client's half of Slurm compatibility: precedence of script, sbatch flags and options; --export; the
array rows of `queue`."""
from __future__ import annotations

import pytest

from ds01q.cli.arrays_view import collapse, label, ranges
from ds01q.client.api import Client
from ds01q.errors import RequestError


def prepare(tmp_path, text, *slurm_args, **options):
    script = tmp_path / "job.sh"
    script.write_text(text)
    return Client("/nonexistent.sock").prepare(str(script), slurm_args=slurm_args, workdir=str(tmp_path), **options)


def test_options_override_sbatch_flags_which_override_directives(tmp_path):
    text = "#!/bin/sh\n#SBATCH -J a -c 2 --mem=1G --gres=gpu:a100:2 --array=1-3 -p big\necho\n"
    req, warnings = prepare(tmp_path, text, "-J", "b", "--mem-per-cpu=100", name="c", mig="1g.5gb")
    assert req["name"] == "c" and req["mig"] == "1g.5gb" and "gpus" not in req and "gpu_model" not in req
    assert req["mem"] == "100m" and req["cpus"] == 2 and req["array"] == {"indices": [1, 2, 3], "throttle": None}
    assert len(warnings) == 2 and "--partition=big ignored" in warnings[0] and "1 CPU is assumed" in warnings[1]
    req, _ = prepare(tmp_path, text, array="7%1", dependency="afterany:4", begin="now+1hour")
    assert req["array"] == {"indices": [7], "throttle": 1} and req["begin"] == {"kind": "delay", "seconds": 3600}
    assert req["dependency"] == {"mode": "all", "items": [{"type": "afterany", "jobs": [{"id": 4}]}]}


def test_export_copies_named_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_KEY", "k1")
    req, warnings = prepare(tmp_path, "#SBATCH --export=ALL,WANDB_KEY,X=1\n", env={"Y": "2"})
    assert req["env"] == {"WANDB_KEY": "k1", "X": "1", "Y": "2"}
    assert len(warnings) == 1 and "does not copy your whole environment" in warnings[0]


def test_bad_flags_are_one_line_errors(tmp_path):
    with pytest.raises(RequestError) as e:
        prepare(tmp_path, "echo\n", array="3-1")
    assert "empty range" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RequestError) as e:
        prepare(tmp_path, "echo\n", "--bogus")
    assert "unknown option" in str(e.value)


def test_queue_rows_for_arrays():
    assert ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8" and ranges([3]) == "3"
    jobs = [{"id": 10, "array_job_id": 10, "array_task_id": 0, "state": "RUNNING"},
            {"id": 9, "array_job_id": None, "array_task_id": None, "state": "PENDING"},
            *({"id": 10 + i, "array_job_id": 10, "array_task_id": i, "state": "PENDING"} for i in (1, 2, 3, 5)),
            {"id": 16, "array_job_id": 10, "array_task_id": 6, "state": "HELD"}]
    rows = collapse(jobs, {10: 2})
    assert [r["label"] for r in rows] == ["10_0", "9", "10_[1-3,5%2]", "10_6"]
    assert rows[2]["tasks"] == 4 and label(jobs[1]) == "9"


def test_top_frame_shows_gpus_running_and_pending_with_reason_and_eta():
    from datetime import datetime, timezone

    from rich.console import Console

    from ds01q.cli.top import frame

    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    status = {"gpus": [{"index": 0, "name": "NVIDIA A100-PCIE-40GB", "utilization": 42.0, "drained": False,
                        "slices": [{"uuid": "MIG-0000-aaaa-1111", "profile": "3g.20gb", "state": "busy", "job": 7,
                                    "user": "alice"},
                                   {"uuid": "MIG-0000-aaaa-2222", "profile": "2g.10gb", "state": "free"}]}]}
    base = {"user": "alice", "request": {"kind": "mig", "profile": "3g.20gb"}, "submitted_at": "2026-11-30T11:00:00Z"}
    queue = [{**base, "id": 7, "name": "train", "state": "RUNNING", "slices": ["MIG-0000-aaaa-1111"],
              "started_at": "2026-11-30T11:30:00Z"},
             *({**base, "id": 8 + i, "name": "sweep", "state": "PENDING", "reason": "JobArrayTaskLimit",
                "array_job_id": 8, "array_task_id": i, "estimated_start": "2026-11-30T12:05:00Z"} for i in range(3))]
    console = Console(record=True, width=140)
    console.print(frame(status, queue, now=now))
    text = console.export_text()
    assert "42%" in text and "3g.20gb" in text and "busy" in text and "free" in text
    assert "running 1  pending 3" in text and "8_[0-2]" in text and "JobArrayTaskLimit" in text
    assert "in 5m00s" in text and "train" in text


def test_submit_wait_reports_each_change_on_stderr_off_a_terminal(capsys):
    from ds01q.cli.main import _wait_for_end

    class Fake:
        def __init__(self):
            pending = {"id": 5, "state": "PENDING", "reason": "Resources", "estimated_start": None, "slices": []}
            self.seen = [pending, pending, {"id": 5, "state": "RUNNING", "slices": ["MIG-1"]},
                         {"id": 5, "state": "COMPLETED", "exit_code": 0}]

        def show_surviving_restart(self, job_id):
            return self.seen.pop(0)

        def queue(self):
            return [{"id": 4, "state": "PENDING"}, {"id": 5, "state": "PENDING"}]

        def wait_states(self, job_ids, timeout):  # the daemon's wait between two looks
            assert job_ids == [5] and timeout == 0
            return {5: "PENDING"}

    job = _wait_for_end(Fake(), 5, every_s=0)
    err = capsys.readouterr().err.splitlines()
    assert job["state"] == "COMPLETED"
    assert err == ["ds01q: job 5 PENDING: position 2 of 2, reason Resources, estimated start unknown "
                   "(Ctrl-C stops waiting)", "ds01q: job 5 RUNNING on MIG-1 (Ctrl-C stops waiting)"]


def test_squeue_format_fields_widths_and_header():
    from ds01q.cli.slurm_shims import squeue_line

    job = {"id": 12, "array_job_id": 12, "array_task_id": 0, "state": "PENDING", "reason": "Held", "name": "sweep",
           "user": "alice", "group": "student", "request": {"kind": "gpus", "count": 2, "gpu_model": "a100"},
           "time_limit_s": 5400, "cpus": 4, "mem_bytes": 8 * 1024**3}
    fmt = "%.8i|%-6j|%t|%K|%l|%b|%C|%m|%R|%%"
    assert squeue_line(fmt, None) == "   JOBID|NAME  |ST|ARRAY_TASK_ID|TIME_LIMIT|TRES_PER_NODE|CPUS|MIN_MEMORY|" \
                                     "NODELIST(REASON)|%"
    assert squeue_line(fmt, job) == "    12_0|sweep |PD|0|1:30:00|gpu:a100:2|4|8192M|(Held)|%"
