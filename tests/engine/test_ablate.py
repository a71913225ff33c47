"""`masters ablate`: a grid by name, shared banks, skip on rerun, rows that record provenance."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from masters.cli import main
from masters.engine.ablate import build_cells, parse_grid, set_dotted
from masters.errors import MastersError, SpecError


def base_config(tiny_pair) -> dict:
    teacher, student = tiny_pair
    return {
        "teacher": str(teacher), "student": str(student),
        "data": {"source": "shapes", "n_train": 2, "n_validation": 0, "n_test": 2},
        "generation": {"n_teacher_responses": 1, "n_student_responses": 1, "max_new_tokens": 3, "batch_size": 2},
        "training": {"n_teacher": 1, "n_student": 1, "questions_per_step": 1, "learning_rate": 1e-3},
    }


def test_grid_values_are_yaml_typed_and_brackets_keep_commas():
    grid = parse_grid(["schedule.r_max=0,0.1", "masker=magnitude,{name: random, seed: 3}", "seed=1"])
    assert grid == {"schedule.r_max": [0, 0.1], "masker": ["magnitude", {"name": "random", "seed": 3}], "seed": [1]}
    with pytest.raises(MastersError, match="KEY=V1,V2"):
        parse_grid(["training.method"])


def test_keys_joined_by_plus_move_together(tiny_pair, tmp_path):
    grid = parse_grid(["training.n_teacher + training.n_student=[1,0],[0,1]", "seed=0,1"])
    assert grid == {"training.n_teacher+training.n_student": [[1, 0], [0, 1]], "seed": [0, 1]}
    cells = build_cells(base_config(tiny_pair), grid, tmp_path)
    assert len(cells) == 4  # two mixes x two seeds, not 2 x 2 x 2
    mixes = {(c.spec.training.n_teacher, c.spec.training.n_student) for c in cells}
    assert mixes == {(1, 0), (0, 1)}
    assert cells[0].overrides == {"training.n_teacher": 1, "training.n_student": 0, "seed": 0}
    with pytest.raises(MastersError, match=r"list of 2"):
        parse_grid(["training.n_teacher+training.n_student=4,4"])


def test_set_dotted_expands_a_name_shorthand():
    config = {"masker": "magnitude"}
    set_dotted(config, "masker.memory", "on_the_fly")
    assert config == {"masker": {"name": "magnitude", "memory": "on_the_fly"}}


def test_every_cell_is_validated_before_anything_runs(tiny_pair, tmp_path):
    with pytest.raises(SpecError) as info:
        build_cells(base_config(tiny_pair), {"training.method": ["masters", "sfft"], "masker": ["magnitud"]}, tmp_path)
    text = info.value.render()
    assert "[training.method=sfft, masker=magnitud]" in text and "Did you mean: magnitude?" in text
    assert not (tmp_path / "cells").exists()


def test_cells_with_the_same_generation_settings_share_one_bank(tiny_pair, tmp_path):
    cells = build_cells(base_config(tiny_pair), parse_grid(["training.n_teacher=0,1", "masker=magnitude,random"]),
                        tmp_path)
    banks = {c.overrides["masker"]: c.spec.bank_dir for c in cells}
    assert len(cells) == 4 and len(set(banks.values())) == 2
    assert {c.spec.bank_dir for c in cells if c.overrides["masker"] == "random"} == {banks["random"]}


def test_ablate_runs_the_grid_writes_results_and_skips_finished_cells(tiny_pair, tmp_path, capsys):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({**base_config(tiny_pair), "output_dir": str(tmp_path / "run")}))
    argv = ["ablate", str(path), "--grid", "training.method=masters,sft", "--seeds", "0,1"]
    assert main(argv) == 0
    out = tmp_path / "run" / "ablate"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4 and {r["grid.training.method"] for r in rows} == {"masters", "sft"}
    data = json.loads((out / "results.json").read_text())
    cell = data["cells"][0]
    assert cell["components"]["masker"] == "magnitude" and "versions" in cell["provenance"]
    assert "train" in cell["stage_identities"]
    assert [s["seeds"] for s in data["summary"]] == [2, 2] and (out / "results.png").exists()
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped (finished earlier)") == 4
