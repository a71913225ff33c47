"""The component commands: plugins, list, describe, schema, validate --print."""

from __future__ import annotations

import json

import yaml

from masters.cli import main
from masters.plugins import get_components


def run_json(capsys, *argv: str):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_list_shows_every_registered_component(capsys):
    rows = run_json(capsys, "list", "--json")
    registered = {(e.kind, e.name) for reg in get_components().registries.values() for e in reg}
    assert {(r["kind"], r["name"]) for r in rows} == registered
    assert all(r["distribution"] for r in rows)


def test_list_one_kind_accepts_singular_and_plural(capsys):
    a = run_json(capsys, "list", "rewards", "--json")
    b = run_json(capsys, "list", "reward", "--json")
    assert a == b and {r["kind"] for r in a} == {"reward"}


def test_describe_gives_fields_defaults_descriptions_and_origin(capsys):
    info = run_json(capsys, "describe", "numeric", "--json")
    fields = {f["field"]: f for f in info["fields"]}
    assert fields["rel_tol"]["default"] == 0.01 and fields["rel_tol"]["description"]
    assert info["origin"]["distribution"] == "masters-distill"
    assert info["json_schema"]["additionalProperties"] is False
    assert main(["describe", "staircase"]) == 0
    assert "r_max" in capsys.readouterr().out


def test_plugins_lists_what_each_registers(capsys):
    data = run_json(capsys, "plugins", "--json")
    registered = {name for row in data["plugins"] for names in row["registers"].values() for name in names}
    assert {"magnitude", "staircase", "exact_match"} <= registered
    assert data["failed"] == []


def test_schema_of_run_and_of_a_kind(capsys):
    run = run_json(capsys, "schema")
    assert {"teachers", "student", "masker", "schedule", "rewards"} <= set(run["properties"])
    rewards = run_json(capsys, "schema", "reward")
    assert set(rewards) == set(get_components().registry("reward").names())


def test_validate_print_emits_the_resolved_spec(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("teacher: t\nstudent: s\n")
    assert main(["validate", str(path), "--print", "--no-paths"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["schedule"]["r_max"] == 0.2 and resolved["masker"]["name"] == "magnitude"
