"""Accounting: what each job run used, rolled up by period, user, group and cgroup.

    models.py   job_usage, usage_samples, rollups, rollup_watermarks, rollup_dirty
    record.py   the daemon's hooks: on_job_end, on_sample; decayed_usage for fair-share
    rollup.py   periods, the split of runs over them, rollup() (cron: `ds01q admin accounting rollup`)
    report.py   history_usage (for `ds01q history`), build_report (`ds01q report`), plot

Every function that takes a Session leaves the transaction to its caller;
``ds01q.accounting.rollup.rollup`` takes a sessionmaker and commits one period at a time
(it is not re-exported here, so that ``ds01q.accounting.rollup`` stays the module).
"""
from ds01q.accounting.record import cgroup_of, decayed_usage, on_job_end, on_sample
from ds01q.accounting.report import ReportQuery, build_report, history_usage, plot

__all__ = [
    "ReportQuery",
    "build_report",
    "cgroup_of",
    "decayed_usage",
    "history_usage",
    "on_job_end",
    "on_sample",
    "plot",
]
