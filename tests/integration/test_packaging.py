"""The wheel holds what the daemon needs at run time: the Alembic migrations."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_the_migrations(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("ds01q-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = sorted(p.name for p in (ROOT / "ds01q/db/migrations/versions").glob("*.py"))
    assert versions and "ds01q/db/migrations/env.py" in names
    assert "ds01q/db/migrations/script.py.mako" in names
    assert {f"ds01q/db/migrations/versions/{v}" for v in versions} <= names
