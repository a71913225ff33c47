"""``masters demo``: the embedded default (design.md, "The embedded default").

The shapes task, a teacher trained on it, a smaller base student after a supervised warm-up, the
full Masters method and its baselines, evaluated side by side, on CPU in minutes.
"""

from __future__ import annotations

from masters.demo.spec import DemoSpec, load_demo_spec

__all__ = ["DemoSpec", "load_demo_spec", "run_demo"]


def run_demo(spec, **kwargs):  # noqa: D401 - lazy re-export: importing masters.demo stays torch-free
    """Run the demo (see :func:`masters.demo.run.run_demo`)."""
    from masters.demo.run import run_demo as _run

    return _run(spec, **kwargs)
