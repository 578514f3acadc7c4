"""The automatic MIG mode (mig.auto) through the fake NVML/nvidia-smi, the controller and the FakeExecutor."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ds01q.controller.autolayout import AutoLayout
from ds01q.mig.smi import MigController
from ds01q.services import jobs, status
from tests.controller.test_controller import ROOT, config_data, db_url  # noqa: F401 (fixture)
from tests.controller.test_mig_recut import CUT, NvmlHarness
from tests.fakes.fake_pynvml import FakePynvml


def make(tmp_path: Path, url: str, fake: FakePynvml, mode: object) -> NvmlHarness:
    class AutoHarness(NvmlHarness):
        def write_config(self, slices: list[str]) -> None:
            data = config_data(self.tmp_path, slices)
            data["inventory"] = {"source": "nvml"}
            data["mig"] = {"auto": mode, "min_interval": "10m", "max_per_day": 4}
            self.config_path.write_text(yaml.safe_dump(data))

    h = AutoHarness(tmp_path, url)
    h.controller.autolayout = AutoLayout(MigController(fake.nvidia_smi))
    h.tick()
    return h


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    f = FakePynvml([("NVIDIA A100-PCIE-40GB", CUT)])
    monkeypatch.setitem(sys.modules, "pynvml", f)
    return f


@pytest.fixture(params=[True, "propose-only"])
def h(request: pytest.FixtureRequest, tmp_path: Path, db_url: str, fake: FakePynvml) -> Iterator[NvmlHarness]:  # noqa: F811
    harness = make(tmp_path, db_url, fake, request.param)
    yield harness
    harness.engine.dispose()


def test_auto_recut_serves_waiting_1g_jobs_without_stopping_anything(h: NvmlHarness, fake: FakePynvml) -> None:
    big = h.submit(mig="2g.10gb")
    h.tick()
    (busy_uuid,) = h.ex.specs[big].slices
    fake.set_instance_busy(busy_uuid)
    small = [h.submit(mig="1g.5gb") for _ in range(4)]
    h.tick(2, advance=1.0)
    events = status.status(h.ctx, ROOT, {"events": 50})["events"]
    auto_on = h.settings.current.mig_auto == "on"
    kinds = [e["kind"] for e in events]
    assert ("mig-auto" if auto_on else "mig-proposal") in kinds
    proposal = next(e for e in events if e["kind"].startswith("mig-"))
    assert "1g.5gb" in proposal["detail"] and "re-cut" in proposal["detail"]
    assert h.job(big).state == "RUNNING" and not [c for c in h.ex.calls if c[0] == "stop"]
    assert busy_uuid in [u for _, _, u in fake.instances(0)]
    if auto_on:
        assert all(h.job(j).state == "RUNNING" for j in small)
        assert "recut" in kinds
    else:  # propose-only: nothing changed on the GPU
        assert fake.commands == [] and sorted(fake.layout(0)) == sorted(CUT)
        assert sum(h.job(j).state == "RUNNING" for j in small) == 1
        waiting = next(j for j in small if h.job(j).state == "PENDING")
        explain = jobs.show(h.ctx, ROOT, {"id": waiting})["explain"]
        assert "would add 1g.5gb" in explain and "admin mig apply --gpu" in explain
    # hysteresis: no second proposal for this GPU within min_interval
    h.submit(mig="3g.20gb")
    h.tick(3, advance=60.0)
    n = sum(1 for e in status.status(h.ctx, ROOT, {"events": 200})["events"] if e["kind"].startswith("mig-"))
    assert n == 1


def test_config_rejects_bad_auto_values(tmp_path: Path) -> None:
    from ds01q.config import from_dict
    from ds01q.errors import ConfigError

    with pytest.raises(ConfigError, match=r"mig.auto: 'sometimes' is not allowed \(allowed: true, false, propose-only\)"):
        from_dict({"mig": {"auto": "sometimes"}})


def test_the_waiting_line_gives_the_recut_eta_from_the_jobs_in_the_way(tmp_path: Path, db_url: str,  # noqa: F811
                                                                       fake: FakePynvml) -> None:
    h = make(tmp_path, db_url, fake, "propose-only")
    try:
        big = h.submit(mig="2g.10gb")
        h.tick()
        small = [h.submit(mig="1g.5gb") for _ in range(4)]
        h.tick(2, advance=1.0)
        waiting = next(j for j in small if h.job(j).state == "PENDING")
        event = next(e for e in status.status(h.ctx, ROOT, {"events": 50})["events"] if e["kind"] == "mig-proposal")
        target = event["detail"].split(" to ")[1].split(":")[0].split(" + ")
        explain = jobs.show(h.ctx, ROOT, {"id": waiting})["explain"]
        # only free instances change: no wait, just the steps (5 s each: destroy 2g.10gb, create 1g.5gb, ...)
        steps = len(target) - 2  # creates: the target less the kept busy 2g.10gb and 1g.5gb
        destroys = 2  # the two free 2g.10gb
        assert f"would add 1g.5gb in about {5 * (steps + destroys)} s (proposed" in explain
        # a 2g.10gb job (1 h limit) takes a free 2g.10gb the re-cut needs: now it waits for that job
        late = h.submit(mig="2g.10gb", time="1:00:00")
        h.tick()
        assert h.job(late).state == "RUNNING" and h.job(big).state == "RUNNING"
        explain = jobs.show(h.ctx, ROOT, {"id": waiting})["explain"]
        assert "would add 1g.5gb in about 61 min (once job " in explain and f"{late} ends)" in explain
    finally:
        h.engine.dispose()


def test_no_eta_is_promised_for_a_recut_that_stopped(tmp_path: Path, db_url: str,  # noqa: F811
                                                     fake: FakePynvml) -> None:
    h = make(tmp_path, db_url, fake, True)
    try:
        big = h.submit(mig="2g.10gb")
        h.tick()
        (busy_uuid,) = h.ex.specs[big].slices
        fake.set_instance_busy(busy_uuid)
        for _, _, u in fake.instances(0):  # a process the daemon does not know holds every other 2g.10gb
            if u != busy_uuid and u in [x for p, _, x in fake.instances(0) if p == "2g.10gb"]:
                fake.set_instance_busy(u)
        small = [h.submit(mig="1g.5gb") for _ in range(4)]
        h.tick(2, advance=1.0)
        kinds = [(e["kind"], e["detail"] or "") for e in status.status(h.ctx, ROOT, {"events": 50})["events"]]
        assert any(k == "mig-auto" for k, _ in kinds)
        assert any(k == "recut" and d.startswith("stopped after") for k, d in kinds)
        waiting = [j for j in small if h.job(j).state == "PENDING"]
        assert waiting and all("re-cut" not in (jobs.show(h.ctx, ROOT, {"id": j}).get("explain") or "")
                               for j in waiting)
    finally:
        h.engine.dispose()
