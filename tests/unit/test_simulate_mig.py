"""MIG trace replay (ds01q.tools.simulate_mig): the seeded mix, static/auto layouts, borrowing."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from click.testing import CliRunner

from ds01q.tools.simulate import TraceJob
from ds01q.tools.simulate_mig import LONG, SHORT, mig_request, parse_static, simulate_mig
from ds01q.types import RequestKind

REAL_TRACE = "/work/shared/traces/elasticflow-itp/cluster05.csv"
needs_trace = pytest.mark.skipif(not os.path.exists(REAL_TRACE), reason="shared traces not present")


def test_the_mix_is_seeded_and_follows_its_table() -> None:
    short = [TraceJob(i, 0.0, 600.0, 1, 1) for i in range(20000)]
    longs = [TraceJob(i, 0.0, 7200.0, 1, 1) for i in range(20000)]
    for jobs, table in ((short, SHORT), (longs, LONG)):
        got = Counter((r.profile if r.kind == RequestKind.MIG else "full") for r in (mig_request(j, 3) for j in jobs))
        for name, p in table:
            assert abs(got[name] / len(jobs) - p) < 0.015, (name, got[name])
    assert [mig_request(j, 3) for j in short[:50]] == [mig_request(j, 3) for j in short[:50]]
    assert [mig_request(j, 3) for j in short[:50]] != [mig_request(j, 4) for j in short[:50]]
    big = mig_request(TraceJob(1, 0.0, 10.0, 8, 16), 0)
    assert big.kind == RequestKind.GPUS and big.count == 2


def test_static_layouts_are_checked() -> None:
    assert parse_static("full;3g.20gb+2g.10gb+1g.5gb+1g.5gb") == [("full",), ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")]
    with pytest.raises(ValueError, match="does not fit"):
        parse_static("4g.20gb+4g.20gb")


@needs_trace
def test_auto_recuts_and_serves_every_job_a_static_layout_cannot() -> None:
    static = simulate_mig(REAL_TRACE, 4, "static:3g.20gb+2g.10gb+1g.5gb+1g.5gb", max_jobs=120)
    auto = simulate_mig(REAL_TRACE, 4, "auto", max_jobs=120)
    assert static["recuts"] == 0 and static["unstarted"] > 0  # no 4g.20gb, no whole GPU
    assert auto["recuts"] > 0 and auto["unstarted"] == 0 and auto["jobs"] == 120
    assert 0 < float(auto["gpu_equiv_utilization"]) <= 1.0  # type: ignore[arg-type]


@needs_trace
def test_borrowing_preempts_and_off_never_does() -> None:
    on = simulate_mig(REAL_TRACE, 4, "auto", borrowing=True, quota=1.0, users=4, max_jobs=150)
    off = simulate_mig(REAL_TRACE, 4, "auto", borrowing=False, quota=1.0, users=4, max_jobs=150)
    assert off["preemptions"] == 0 and on["preemptions"] > 0
    assert on["unstarted"] == off["unstarted"] == 0


@needs_trace
def test_cli_json_has_the_mig_figures() -> None:
    from ds01q.cli.simulate import simulate

    r = CliRunner().invoke(simulate, ["--trace", REAL_TRACE, "--gpus", "4", "--max-jobs", "60", "--mig-policy",
                                      "auto", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert {"recuts", "preemptions", "gpu_equiv_utilization", "mean_jct_s"} <= set(out)
    bad = CliRunner().invoke(simulate, ["--trace", REAL_TRACE, "--gpus", "4", "--mig-policy", "sometimes"])
    assert bad.exit_code != 0 and "--mig-policy must be static:<layout>, best-static or auto" in str(bad.exception)


def test_request_names_split_profiles_from_whole_gpus() -> None:
    from ds01q.tools.simulate_mig import request_name
    from ds01q.types import ResourceRequest

    assert request_name(ResourceRequest(RequestKind.MIG, "4g.20gb")) == "4g.20gb"
    assert request_name(ResourceRequest(RequestKind.GPUS, count=1)) == "gpus:1"
    assert request_name(ResourceRequest(RequestKind.GPUS, count=2)) == "gpus:2"
    assert request_name(ResourceRequest(RequestKind.ANY)) == "any"


@needs_trace
def test_waits_by_request_add_up_to_the_mean_wait() -> None:
    r = simulate_mig(REAL_TRACE, 4, "auto", max_jobs=120)
    jobs, waits = r["jobs_by_request"], r["mean_wait_by_request_s"]
    assert isinstance(jobs, dict) and isinstance(waits, dict) and set(jobs) == set(waits)
    assert sum(jobs.values()) == r["jobs"] == 120
    assert {"1g.5gb", "gpus:1"} <= set(jobs)
    total = sum(jobs[k] * waits[k] for k in jobs) / 120
    assert abs(total - float(r["mean_wait_s"])) < 1.0  # type: ignore[arg-type]
