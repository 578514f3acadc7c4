"""The scheduling pass keeps the PendingJob of a job whose row and config did not change (snapshot.PendingCache)."""
from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace
from typing import Any

from ds01q.controller.snapshot import PendingCache
def test_a_pending_job_is_built_again_only_when_its_row_or_the_config_changed() -> None:
    Row = namedtuple("Row", "id nice depends_on group")
    made: list[int] = []

    def make(row: Any) -> Any:
        made.append(row.id)
        return SimpleNamespace(id=row.id, nice=row.nice)

    cfg, cache = SimpleNamespace(groups={"student": 1}), PendingCache()
    rows = [Row(1, 0, None, "student"), Row(2, 0, "[3]", "student"), Row(3, 0, None, "gone")]
    first = cache.build(cfg, rows, make)  # type: ignore[arg-type]
    again = cache.build(cfg, rows, make)  # type: ignore[arg-type]
    assert made == [1, 2, 3, 2, 3] and again[0] is first[0]  # with a dependency, or of a group not configured: anew
    made.clear()
    assert cache.build(cfg, [Row(1, 5, None, "student")], make)[0].nice == 5 and made == [1]  # nice changed
    made.clear()
    cache.build(SimpleNamespace(groups={"student": 1}), [Row(1, 5, None, "student")], make)  # type: ignore[arg-type]
    assert made == [1]  # the config was reloaded
    cache.build(cfg, [], make)  # type: ignore[arg-type]
    assert cache.jobs == {}  # no longer pending: forgotten
