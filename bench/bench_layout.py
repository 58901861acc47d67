"""What the layout costs the API and the install, for two checkouts side by side in one run:
`api.main` import time (fresh interpreters, median; wall and CPU seconds, CPU being the figure that
holds on a loaded machine), which worker modules and whether torch the API process imports, and the
runtime wheel's size and core dependencies (Requires-Dist without extras).

    python bench/bench_layout.py BEFORE_DIR AFTER_DIR [--runs 7]

Each checkout is imported from its own directory (it comes first on sys.path), with this venv's
packages. Runs alternate between the two so machine load affects both alike. The wheel is built from
a copy of each checkout, so neither gets a build/ or .egg-info directory."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

# Third-party libraries that cost an API process memory and start-up time when imported.
HEAVY = ("torch", "transformers", "sklearn", "scipy", "librosa", "onnxruntime", "cv2", "numpy", "celery",
         "kombu", "prometheus_client", "faster_whisper", "ctranslate2")
PROBE = ("import json, sys, time; t = time.perf_counter(); c = time.process_time(); import api.main; "
         "print(json.dumps({'s': time.perf_counter() - t, 'cpu_s': time.process_time() - c, "
         "'torch': 'torch' in sys.modules, "
         "'heavy': sorted(m for m in " + repr(HEAVY) + " if m in sys.modules), "
         "'worker': sorted(m for m in sys.modules if m.startswith('worker'))}))")
# Not part of the package: left out of the copy the wheel is built from.
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "test-artifacts", "__pycache__",
                              ".mypy_cache", ".ruff_cache", ".pytest_cache")


def _import(checkout: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=checkout, capture_output=True, text=True,
                         check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wheel(checkout: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        shutil.copytree(checkout, src, ignore=SKIP)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(src)], check=True, capture_output=True, timeout=900)
        wheel = next(out.glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode().splitlines()
            top = sorted({n.split("/")[0] for n in z.namelist() if "/" in n and ".dist-info" not in n})
        core = [line.split(": ", 1)[1] for line in lines
                if line.startswith("Requires-Dist: ") and "extra ==" not in line]
        return {"wheel_bytes": wheel.stat().st_size, "core_requires": core, "packages": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"before": [], "after": []}
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    last: dict[str, dict] = {}
    _import(args.before), _import(args.after)  # warm the file cache for both
    started = time.time()
    for _ in range(args.runs):
        for name, checkout in (("before", args.before), ("after", args.after)):
            last[name] = _import(checkout)
            times[name].append(last[name]["s"])
            cpu[name].append(last[name]["cpu_s"])
    report = {}
    for name, checkout in (("before", args.before), ("after", args.after)):
        wheel = _wheel(checkout)
        report[name] = {
            "api_import_s_median": round(statistics.median(times[name]), 3),
            "api_import_s_all": [round(t, 3) for t in times[name]],
            "api_import_cpu_s_median": round(statistics.median(cpu[name]), 3),
            "api_imports_torch": last[name]["torch"],
            "api_heavy_imports": last[name]["heavy"],
            "api_worker_modules": len(last[name]["worker"]),
            "api_worker_module_names": last[name]["worker"],
            **wheel,
        }
    report["measured_in_s"] = round(time.time() - started, 1)
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
