"""Driver of tests/test_cli_faults.py: runs many bad-input cases through ``masters.cli.main`` in ONE
process (a subprocess of the test), so 60+ cases cost one interpreter start.

Input (argv[1]): a JSON list of cases ``{"id", "argv", "env"}``; output (argv[2]): a JSON list of
``{"id", "code", "stderr", "stdout"}``. An exception escaping ``main`` is recorded with its
traceback: the test fails on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback


def run(cases: list[dict]) -> list[dict]:
    from masters.cli import main
    from masters.cli.output import console

    results = []
    for case in cases:
        saved = {k: os.environ.get(k) for k in case.get("env", {})}
        os.environ.update(case.get("env", {}))
        out, err = io.StringIO(), io.StringIO()
        console.cache_clear()  # the rich consoles bind the current sys.stdout / sys.stderr
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(case["argv"])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException:  # noqa: BLE001 - a bug: recorded, the test fails on it
                code = -1
                err.write(traceback.format_exc())
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        results.append({"id": case["id"], "code": code, "stderr": err.getvalue(), "stdout": out.getvalue()})
    console.cache_clear()
    return results


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        cases = json.load(handle)
    with open(sys.argv[2], "w", encoding="utf-8") as handle:
        json.dump(run(cases), handle)
