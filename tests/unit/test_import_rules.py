"""The layering of style-anchors.md, enforced with import-linter."""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    r = subprocess.run([exe, "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "broken" in r.stdout and "0 broken" in r.stdout


def test_public_api_exports():
    import ds01q

    assert set(ds01q.__all__) == {"Client", "Ds01qError", "JobState", "Reason", "ResourceRequest", "__version__"}
    for name in ds01q.__all__:
        assert hasattr(ds01q, name)
