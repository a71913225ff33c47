"""``masters timeline``: a table of planned teacher and level per step, and a plot."""

from __future__ import annotations


def test_timeline_prints_every_stage_and_writes_a_plot(tmp_path, capsys):
    from masters.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(
        "teachers:\n  - {path: small, schedule: {name: staircase, r_max: 0.3, step: 0.1}}\n  - {path: big}\n"
        "student: s\n"
    )
    plot = tmp_path / "timeline.png"
    assert main(["timeline", str(config), "--steps", "90", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "0.3" in out and "0.15" in out and "big" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_without_steps_for_unknown_data_size_is_a_clear_error(tmp_path, capsys):
    from masters.cli import main

    config = tmp_path / "run.yaml"
    config.write_text("teacher: t\nstudent: s\ndata: {source: llava_json, path: x.json}\n")
    assert main(["timeline", str(config)]) == 2
    assert "--steps" in capsys.readouterr().err


def test_timeline_derives_steps_from_the_built_in_data(tmp_path, capsys):
    from masters.cli import main

    config = tmp_path / "run.yaml"
    config.write_text("teacher: t\nstudent: s\ndata: {source: shapes, n_train: 40}\n")
    assert main(["timeline", str(config)]) == 0
    assert "40 optimizer steps" in capsys.readouterr().out
