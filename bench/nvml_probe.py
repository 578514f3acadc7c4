"""Read a real GPU through NVML and compare it with ds01q's MIG table. Read-only: it never
changes the MIG mode or the layout (no create, no destroy, no mode switch).

    python bench/nvml_probe.py [--out DIR] [--hold-gpu]

Prints, per GPU: name, memory, MIG mode, the ds01q table it maps to, and for every GPU instance
profile NVML offers (nvmlDeviceGetGpuInstanceProfileInfo, all indices) its id, slices, count,
memory and possible placements, each compared field by field with ds01q.mig.profiles. Then what
ds01q's own readers return (read_nvml, read_utilization, read_gpu_processes); with
``--hold-gpu`` a child process holds 1 GiB on GPU 0 (PyTorch) while read_gpu_processes runs,
so the listing can be checked for its pid. ``--out DIR`` also writes the raw figures as JSON
and the text of ``nvidia-smi`` and ``nvidia-smi mig -lgip/-lgipp`` (listings only).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ds01q.errors import InventoryError  # noqa: E402
from ds01q.inventory.gpuprocs import read_gpu_processes  # noqa: E402
from ds01q.inventory.nvml import read_nvml, read_utilization  # noqa: E402
from ds01q.mig.profiles import gpu_model  # noqa: E402

HOLD = ("import sys, time, torch; x = torch.empty(1 << 30, dtype=torch.uint8, device='cuda'); "
        "print('ready', flush=True); sys.stdin.read()")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _try(N: Any, fn: Any) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except N.NVMLError as e:
        return None, str(e)


def _placements(N: Any, h: Any, profile_id: int) -> tuple[list[list[int]] | None, str | None]:
    import ctypes
    arr = (N.c_nvmlGpuInstancePlacement_t * 8)()
    count = ctypes.c_uint(8)
    try:
        N.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, arr, ctypes.byref(count))
    except N.NVMLError as e:
        return None, str(e)
    return [[int(arr[i].start), int(arr[i].size)] for i in range(count.value)], None


def profiles_of(N: Any, h: Any, name: str) -> list[dict[str, Any]]:
    model = gpu_model(name)
    out = []
    for index in range(getattr(N, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0x12)):
        info, err = _try(N, lambda index=index: N.nvmlDeviceGetGpuInstanceProfileInfo(h, index))
        if info is None:
            out.append({"nvml_index": index, "error": err})
            continue
        row: dict[str, Any] = {
            "nvml_index": index, "id": int(info.id), "name": _text(getattr(info, "name", b"")),
            "slice_count": int(info.sliceCount), "instance_count": int(info.instanceCount),
            "multiprocessors": int(info.multiprocessorCount), "memory_mb": int(info.memorySizeMB),
            "jpeg": int(info.jpegCount), "ofa": int(info.ofaCount),
        }
        row["placements"], row["placements_error"] = _placements(N, h, int(info.id))
        row["remaining"], _ = _try(N, lambda pid=int(info.id): N.nvmlDeviceGetGpuInstanceRemainingCapacity(h, pid))
        row["ds01q"] = compare(model, row)
        out.append(row)
    return out


def compare(model: Any, row: dict[str, Any]) -> dict[str, Any]:
    """ds01q's table entry for this NVML profile index and each field that differs."""
    if model is None:
        return {"table": None, "differs": ["no ds01q table for this GPU"]}
    p = next((p for p in model.profiles if p.nvml_index == row["nvml_index"]), None)
    if p is None:
        return {"table": None, "differs": [f"NVML offers index {row['nvml_index']} ({row['name']}); ds01q has none"]}
    differs = []
    if row["name"] and row["name"].replace("MIG ", "") != p.name:
        differs.append(f"name {row['name']!r} vs {p.name!r}")
    if row["id"] != p.profile_id:
        differs.append(f"id {row['id']} vs {p.profile_id}")
    if row["slice_count"] != p.compute_slices:
        differs.append(f"slices {row['slice_count']} vs {p.compute_slices}")
    if row["instance_count"] != p.max_count:
        differs.append(f"count {row['instance_count']} vs {p.max_count}")
    if row["memory_mb"] != p.memory_mb:
        differs.append(f"memory_mb {row['memory_mb']} vs {p.memory_mb}")
    if row["placements"] is not None:
        starts = tuple(s for s, _ in row["placements"])
        sizes = {z for _, z in row["placements"]}
        if starts != p.starts:
            differs.append(f"starts {starts} vs {p.starts}")
        if sizes and sizes != {p.memory_slices}:
            differs.append(f"size {sorted(sizes)} vs {p.memory_slices}")
    return {"table": f"{model.key}/{p.name}", "differs": differs}


def probe(N: Any) -> dict[str, Any]:
    N.nvmlInit()
    try:
        result: dict[str, Any] = {
            "driver": _text(N.nvmlSystemGetDriverVersion()), "nvml": _text(N.nvmlSystemGetNVMLVersion()),
            "pynvml_file": getattr(N, "__file__", None), "gpus": [],
        }
        for i in range(N.nvmlDeviceGetCount()):
            h = N.nvmlDeviceGetHandleByIndex(i)
            name = _text(N.nvmlDeviceGetName(h))
            mig, mig_err = _try(N, lambda h=h: list(N.nvmlDeviceGetMigMode(h)))
            model = gpu_model(name)
            result["gpus"].append({
                "index": i, "name": name, "uuid": _text(N.nvmlDeviceGetUUID(h)),
                "memory_mb": int(N.nvmlDeviceGetMemoryInfo(h).total) >> 20,
                "table": model.key if model else None, "table_memory_mb": model.memory_mb if model else None,
                "mig_mode": mig, "mig_mode_error": mig_err, "profiles": profiles_of(N, h, name),
            })
        return result
    finally:
        N.nvmlShutdown()


def ds01q_readers(hold: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, fn in (("read_nvml", lambda: [g.to_dict() for g in read_nvml()]),
                    ("read_utilization", lambda: [dataclasses.asdict(u) for u in read_utilization()])):
        try:
            out[key] = fn()
        except InventoryError as e:
            out[key] = {"error": str(e)}
    child = None
    if hold:
        child = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        out["holder_ready"] = child.stdout.readline().strip()
        out["holder_pid"] = child.pid
    try:
        out["read_gpu_processes"] = [dataclasses.asdict(p) for p in read_gpu_processes()]
    except InventoryError as e:
        out["read_gpu_processes"] = {"error": str(e)}
    finally:
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=30)
    if hold:
        pids = {p["pid"] for p in out["read_gpu_processes"]} if isinstance(out["read_gpu_processes"], list) else set()
        out["holder_listed"] = out["holder_pid"] in pids
    return out


def smi_texts(out: Path) -> None:
    for fname, argv in (("smi_q.txt", ["nvidia-smi", "-q"]), ("smi_lgip.txt", ["nvidia-smi", "mig", "-lgip"]),
                        ("smi_lgipp.txt", ["nvidia-smi", "mig", "-lgipp"]), ("smi_L.txt", ["nvidia-smi", "-L"])):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            (out / fname).write_text(f"$ {' '.join(argv)}\nrc={r.returncode}\n{r.stdout}{r.stderr}")
        except (OSError, subprocess.TimeoutExpired) as e:
            (out / fname).write_text(f"$ {' '.join(argv)}\nfailed: {e}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--hold-gpu", action="store_true")
    a = ap.parse_args()
    import pynvml
    result = probe(pynvml)
    result["ds01q"] = ds01q_readers(a.hold_gpu)
    for g in result["gpus"]:
        print(f"GPU {g['index']}: {g['name']} {g['memory_mb']} MiB, MIG mode {g['mig_mode'] or g['mig_mode_error']}, "
              f"ds01q table {g['table']} ({g['table_memory_mb']} MiB)")
        for p in g["profiles"]:
            if "error" in p:
                print(f"  index {p['nvml_index']:>2}: {p['error']}")
                continue
            d = p["ds01q"]
            print(f"  index {p['nvml_index']:>2}: id {p['id']:>2} {p['name']:<18} slices {p['slice_count']} "
                  f"count {p['instance_count']} mem {p['memory_mb']} MiB SMs {p['multiprocessors']} "
                  f"placements {p['placements'] if p['placements'] is not None else p['placements_error']} "
                  f"-> {d['table']}: {'same' if not d['differs'] else '; '.join(d['differs'])}")
    print(json.dumps(result["ds01q"], indent=1, default=str))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "nvml_probe.json").write_text(json.dumps(result, indent=1, default=str))
        smi_texts(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
