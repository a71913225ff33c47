"""The planned timeline of a run (teacher and level per step), as a table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from masters.schedules.chain import Segment, TeacherChain


def plot_timeline(chain: TeacherChain, total_steps: int, path: str | Path) -> Path:
    """A step plot of the mask level over optimizer steps, one colour per teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segments: list[Segment] = chain.segments(total_steps)
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labelled: set[int] = set()
    for seg in segments:
        colour = colours[seg.teacher % len(colours)]
        label = None if seg.teacher in labelled else chain.names[seg.teacher]
        labelled.add(seg.teacher)
        ax.hlines(float(seg.level), seg.start, seg.end, colors=colour, linewidth=2.5, label=label)
    for a, b in zip(segments, segments[1:]):
        ax.vlines(b.start, float(a.level), float(b.level), colors="0.6", linewidth=0.8)
    ax.set_xlim(0, total_steps)
    ax.set_ylim(bottom=-0.01)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mask ratio")
    ax.set_title("Masters restore schedule")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    from masters.files import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:  # decision 18: the PNG appears whole or not at all
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def timeline_rows(chain: TeacherChain, total_steps: int) -> list[dict[str, Any]]:
    return [
        {"teacher": s.teacher, "path": chain.names[s.teacher], "stage": s.stage, "level": str(s.level),
         "start": s.start, "end": s.end, "steps": s.steps}
        for s in chain.segments(total_steps)
    ]
