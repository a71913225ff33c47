"""CLI start-up time, and which heavy modules each light command imports.

    python benchmarks/cli_startup.py [--repeats 7]

Each command runs in a fresh interpreter (what a user's shell does), side by side with two
baselines measured in the same run: a bare ``python -c pass`` and ``python -c "import torch"``.
Writes benchmarks/results/cli_startup.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "accelerate", "safetensors", "pyarrow", "numpy", "PIL")
RESULTS = Path(__file__).resolve().parent / "results"

PROBE = """
import sys, runpy
heavy = {heavy!r}
sys.argv = ["masters", *{argv!r}]
try:
    from masters.cli import main
    rc = main(sys.argv[1:])
finally:
    loaded = [m for m in heavy if m in sys.modules]
    sys.stderr.write("HEAVY=" + ",".join(loaded) + "\\n")
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    heavy = next((line[6:] for line in proc.stderr.splitlines() if line.startswith("HEAVY=")), "")
    return elapsed, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "run.yaml"
        config.write_text("teacher: models/teacher\nstudent: models/student\n")
        commands = {
            "masters --help": ["--help"],
            "masters list": ["list"],
            "masters describe magnitude": ["describe", "magnitude"],
            "masters validate CONFIG": ["validate", str(config)],
            "masters schema": ["schema"],
            "masters plugins": ["plugins"],
        }
        env = {**os.environ, "MASTERS_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "120"}
        rows = []
        baselines = {"python -c pass": [sys.executable, "-c", "pass"],
                     "python -c 'import torch'": [sys.executable, "-c", "import torch"]}
        for label, cmd in baselines.items():
            times = [timed(cmd, env)[0] for _ in range(args.repeats)]
            rows.append({"command": label, "median_s": statistics.median(times), "heavy_imports": "-"})
        for label, argv in commands.items():
            probe = PROBE.format(heavy=HEAVY, argv=argv)
            results = [timed([sys.executable, "-c", probe], env) for _ in range(args.repeats)]
            rows.append({"command": label, "median_s": statistics.median(t for t, _ in results),
                         "heavy_imports": results[0][1] or "none"})

    torch_time = rows[1]["median_s"]
    for row in rows:
        row["vs_import_torch"] = row["median_s"] / torch_time
    report = {
        "benchmark": "cli_startup",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "repeats": args.repeats,
        "rows": rows,
        "light_commands_import_torch": any("torch" in r["heavy_imports"].split(",") for r in rows[2:]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# CLI start-up", "", f"Machine: {report['machine']}; median of {args.repeats} fresh interpreters.", "",
             "| command | median (s) | x `import torch` | heavy modules imported |", "| --- | --- | --- | --- |"]
    lines += [f"| `{r['command']}` | {r['median_s']:.3f} | {r['vs_import_torch']:.2f} | {r['heavy_imports']} |"
              for r in rows]
    (RESULTS / "cli_startup.md").write_text("\n".join(lines) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title="masters CLI start-up (fresh interpreter each)")
    for col in ("command", "median s", "x import torch", "heavy modules"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["command"], f"{r['median_s']:.3f}", f"{r['vs_import_torch']:.2f}", r["heavy_imports"])
    Console().print(table)
    if report["light_commands_import_torch"]:
        raise SystemExit("a light command imported torch")


if __name__ == "__main__":
    main()
