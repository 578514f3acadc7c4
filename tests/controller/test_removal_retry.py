"""Finding 16: a container whose removal failed after its job ended is removed by a later sweep."""
from __future__ import annotations

from tests.controller.test_controller import Harness, db_url, h  # noqa: F401  (the harness and its fixtures)
from ds01q.controller.loop import SWEEP_EVERY_S


def test_failed_removal_is_retried_by_the_sweep(h: Harness) -> None:  # noqa: F811
    job_id = h.submit()
    h.tick()
    h.ex.fail_removes = 2
    h.ex.finish(job_id, exit_code=0)
    h.tick()
    assert h.job(job_id).state == "COMPLETED"
    assert job_id in h.ex.exited()  # the container is still there
    h.tick(advance=SWEEP_EVERY_S + 1)
    h.tick(advance=SWEEP_EVERY_S + 1)  # the first retry fails too
    h.tick(advance=SWEEP_EVERY_S + 1)
    assert job_id not in h.ex.exited()
    assert [c for c in h.ex.calls if c == ("remove", job_id)] == [("remove", job_id)] * 3
