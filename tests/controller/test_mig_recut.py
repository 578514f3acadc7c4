"""Partial MIG re-cut through the fake NVML and the fake nvidia-smi, with the controller and
the FakeExecutor: running jobs keep their slice and container; a busy instance is never destroyed."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from ds01q.db.models import InventoryEvent, Slice
from ds01q.errors import InventoryError
from ds01q.mig.smi import MigController
from ds01q.services import mig as mig_service
from ds01q.services import status as status_service
from ds01q.services.mig_recut import release_stale_reservations
from tests.controller.test_controller import ROOT, Harness, config_data, db_url  # noqa: F401 (fixture)
from tests.fakes.fake_pynvml import FakePynvml

CUT = ("2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb")


class NvmlHarness(Harness):
    def write_config(self, slices: list[str]) -> None:
        data = config_data(self.tmp_path, slices)
        data["inventory"] = {"source": "nvml"}
        self.config_path.write_text(yaml.safe_dump(data))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    f = FakePynvml([("NVIDIA A100-PCIE-40GB", CUT)])
    monkeypatch.setitem(sys.modules, "pynvml", f)
    return f


@pytest.fixture
def h(tmp_path: Path, db_url: str, fake: FakePynvml) -> Iterator[NvmlHarness]:
    harness = NvmlHarness(tmp_path, db_url)
    harness.tick()  # reads the fake NVML
    yield harness
    harness.engine.dispose()


def gpu_uuid(fake: FakePynvml) -> str:
    return fake.gpus[0].uuid


def db_slices(h: Harness) -> dict[str, tuple[str, bool]]:
    with h.sessions() as s:
        return {r.uuid: (r.profile, r.drained) for r in s.scalars(select(Slice).where(Slice.present.is_(True)))}


def recut_events(h: Harness) -> list[str]:
    with h.sessions() as s:
        return [e.detail or "" for e in s.scalars(select(InventoryEvent).where(InventoryEvent.kind == "recut")
                                                   .order_by(InventoryEvent.id))]


def start_busy_2g(h: NvmlHarness, fake: FakePynvml) -> tuple[int, str]:
    job = h.submit(mig="2g.10gb")
    h.tick()
    assert h.job(job).state == "RUNNING"
    (slice_uuid,) = h.ex.specs[job].slices
    fake.set_instance_busy(slice_uuid)  # its CUDA context: the driver refuses to destroy it
    return job, slice_uuid


def test_recut_serves_pending_1g_jobs_while_the_2g_job_keeps_running(h: NvmlHarness, fake: FakePynvml) -> None:
    job, slice_uuid = start_busy_2g(h, fake)
    small = [h.submit(mig="1g.5gb") for _ in range(4)]
    h.tick()
    assert sum(h.job(j).state == "RUNNING" for j in small) == 1  # only one 1g.5gb exists
    before_cmds = len(fake.commands)
    plan = mig_service.plan(h.ctx, ROOT, {"gpu": gpu_uuid(fake)})[0]
    assert plan["partial"]["full_drain"] is False and slice_uuid in plan["partial"]["keep"]
    r = mig_service.apply(h.ctx, ROOT, {"gpu": gpu_uuid(fake)}, mig=MigController(fake.nvidia_smi))
    assert r["applied"] and r["partial"]["full_drain"] is False
    # the running job: same container, never stopped, same slice, still on the GPU
    assert h.job(job).state == "RUNNING" and h.job(job).container == f"fake-{job}-1"
    assert not [c for c in h.ex.calls if c[0] == "stop"]
    assert slice_uuid in [u for _, _, u in fake.instances(0)]
    assert (job, slice_uuid) in h.active_allocations()
    # only single instances were destroyed, never the busy one's GI
    busy_gi = next(m.gi_id for m in fake.gpus[0].migs.values() if m.uuid == slice_uuid)
    issued = [" ".join(c) for c in fake.commands[before_cmds:]]
    assert all("-gi" in c for c in issued if "-d" in c)
    assert not [c for c in issued if f"-gi {busy_gi} " in c]
    assert sorted(fake.layout(0)).count("1g.5gb") >= 4
    h.tick()
    assert all(h.job(j).state == "RUNNING" for j in small)
    assert not any(drained for _, drained in db_slices(h).values())
    events = recut_events(h)
    assert events[0].startswith("begin") and events[-1].startswith("done") and len(events) >= 4


def test_an_instance_busy_at_destroy_time_is_not_destroyed(h: NvmlHarness, fake: FakePynvml) -> None:
    job, slice_uuid = start_busy_2g(h, fake)
    free_2g = [u for p, _, u in fake.instances(0) if p == "2g.10gb" and u != slice_uuid]
    fake.set_instance_busy(free_2g[-1])  # a process the daemon does not know about
    with pytest.raises(InventoryError, match="In use by another client"):
        mig_service.apply(h.ctx, ROOT, {"gpu": gpu_uuid(fake), "layout": "2g.10gb,1g.5gb,1g.5gb,1g.5gb,1g.5gb,1g.5gb"},
                          mig=MigController(fake.nvidia_smi))
    present = [u for _, _, u in fake.instances(0)]
    assert free_2g[-1] in present and slice_uuid in present
    assert h.job(job).state == "RUNNING"
    # the database follows the hardware and nothing stays reserved
    assert set(db_slices(h)) == set(present)
    assert not any(drained for _, drained in db_slices(h).values())
    assert "stopped after" in recut_events(h)[-1]


def test_a_busy_instance_in_the_way_means_a_whole_gpu_drain_and_the_plan_says_so(
        h: NvmlHarness, fake: FakePynvml) -> None:
    start_busy_2g(h, fake)
    r = mig_service.apply(h.ctx, ROOT, {"gpu": gpu_uuid(fake), "layout": "3g.20gb,3g.20gb", "dry_run": True},
                          mig=MigController(fake.nvidia_smi))
    assert not r["applied"] and r["whole_gpu"].startswith("whole-GPU drain: busy instances")
    assert r["commands"] == ["nvidia-smi mig -i 0 -dci", "nvidia-smi mig -i 0 -dgi",
                             "nvidia-smi mig -i 0 -cgi 9,9 -C"]


def test_a_crash_between_steps_is_reconciled_at_the_next_start(h: NvmlHarness, fake: FakePynvml) -> None:
    start_busy_2g(h, fake)
    calls: list[list[str]] = []

    def dies_after_two(argv: list[str]) -> subprocess.CompletedProcess[str]:
        if len(calls) == 2:
            raise KeyboardInterrupt  # the daemon is killed mid re-cut
        calls.append(argv)
        return fake.nvidia_smi(argv)

    with pytest.raises(KeyboardInterrupt):
        mig_service.apply(h.ctx, ROOT, {"gpu": gpu_uuid(fake), "layout": "2g.10gb,1g.5gb,1g.5gb,1g.5gb,1g.5gb,1g.5gb"},
                          mig=MigController(dies_after_two))
    assert any(drained for _, drained in db_slices(h).values())  # a reservation was left behind
    # the next start: stale reservations freed, inventory re-read
    freed = release_stale_reservations(h.ctx)
    assert freed
    h.tick()
    present = {u: p for p, _, u in fake.instances(0)}
    assert {u: p for u, (p, _) in db_slices(h).items()} == present
    assert not any(drained for _, drained in db_slices(h).values())
    # and a new apply finishes the job from there
    r = mig_service.apply(h.ctx, ROOT, {"gpu": gpu_uuid(fake), "layout": "2g.10gb,1g.5gb,1g.5gb,1g.5gb,1g.5gb,1g.5gb"},
                          mig=MigController(fake.nvidia_smi))
    assert r["applied"] and sorted(fake.layout(0)) == sorted(["2g.10gb"] + ["1g.5gb"] * 5)


def test_bad_layouts_get_one_line_errors(h: NvmlHarness, fake: FakePynvml) -> None:
    from ds01q.errors import RequestError

    for layout, msg in (("4g.20gb,4g.20gb", "does not fit"), ("x", "does not fit"), (["", 3], "--layout")):
        with pytest.raises(RequestError, match=msg) as err:
            mig_service.apply(h.ctx, ROOT, {"gpu": gpu_uuid(fake), "layout": layout},
                              mig=MigController(fake.nvidia_smi))
        assert "\n" not in str(err.value)


def db_placements(h: Harness) -> dict[str, tuple[int | None, int | None, int | None]]:
    with h.sessions() as s:
        return {r.uuid: (r.placement_start, r.placement_size, r.gi_id)
                for r in s.scalars(select(Slice).where(Slice.present.is_(True)))}


def nvml_placements(fake: FakePynvml) -> dict[str, tuple[int | None, int | None, int | None]]:
    return {m.uuid: (m.start, m.profile.memory_slices, m.gi_id) for m in fake.gpus[0].migs.values()}


def test_the_inventory_records_each_instances_placement_and_status_shows_it(h: NvmlHarness,
                                                                             fake: FakePynvml) -> None:
    assert db_placements(h) == nvml_placements(fake)
    shown = {s["uuid"]: s["placement"] for g in status_service.status(h.ctx, ROOT, {})["gpus"] for s in g["slices"]}
    assert shown == {u: {"start": a, "size": b, "gi_id": c} for u, (a, b, c) in nvml_placements(fake).items()}
    mig_service.apply(h.ctx, ROOT, {"gpu": gpu_uuid(fake), "layout": "2g.10gb,2g.10gb,1g.5gb,1g.5gb,1g.5gb"},
                      mig=MigController(fake.nvidia_smi))
    assert db_placements(h) == nvml_placements(fake)  # the re-cut's new instances too


def test_without_nvml_privileges_the_planner_uses_the_recorded_placements(h: NvmlHarness, fake: FakePynvml) -> None:
    job, slice_uuid = start_busy_2g(h, fake)
    recorded = db_placements(h)
    fake.privileged = False  # nvmlDeviceGetGpuInstanceById: NoPermission from now on
    h.tick()
    assert db_placements(h) == recorded  # a report without placements keeps what was recorded
    small = [h.submit(mig="1g.5gb") for _ in range(4)]
    h.tick()
    r = mig_service.apply(h.ctx, ROOT, {"gpu": gpu_uuid(fake)}, mig=MigController(fake.nvidia_smi))
    assert r["applied"] and not r["partial"]["full_drain"] and slice_uuid in r["partial"]["keep"]
    assert h.job(job).state == "RUNNING" and (job, slice_uuid) in h.active_allocations()
    h.tick()
    assert all(h.job(j).state == "RUNNING" for j in small)
    new = set(db_placements(h)) - set(recorded)
    assert new and all(db_placements(h)[u] == (None, None, None) for u in new)  # unknown, not guessed


def test_a_static_inventory_records_the_declared_starts(h: NvmlHarness) -> None:
    from ds01q.inventory import static_inventory
    from ds01q.inventory.sync import sync

    gpu = {"uuid": "GPU-static-1", "name": "NVIDIA A100-PCIE-40GB",
           "mig": [{"uuid": "MIG-s-3g", "profile": "3g.20gb", "start": 4},
                   {"uuid": "MIG-s-2g", "profile": "2g.10gb", "start": 0},
                   {"uuid": "MIG-s-1g", "profile": "1g.5gb", "start": 2}]}
    with h.sessions.begin() as s:
        sync(s, static_inventory([gpu], node="static-node"), h.clock.now(), node="static-node")
    got = db_placements(h)
    assert {u: got[u] for u in ("MIG-s-3g", "MIG-s-2g", "MIG-s-1g")} == {
        "MIG-s-3g": (4, 4, None), "MIG-s-2g": (0, 2, None), "MIG-s-1g": (2, 1, None)}
