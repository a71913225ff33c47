"""`masters bank import`: responses made elsewhere, validated row by row, added to the bank."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from masters.bank.importer import fingerprint_of, import_files, student_tokenizer
from masters.bank.store import ResponseBank
from masters.cli import main
from masters.errors import DataError
from masters.config import validate_run_spec

Q0, Q1 = "shapes-0-train-000000", "shapes-0-train-000001"


def config(tiny_pair, out, **overrides) -> dict:
    teacher, student = tiny_pair
    data = {
        "output_dir": str(out), "teacher": str(teacher), "student": str(student),
        "data": {"source": "shapes", "n_train": 4, "n_validation": 0, "n_test": 1},
        "generation": {"n_teacher_responses": 1, "n_student_responses": 1, "max_new_tokens": 4, "batch_size": 4},
    }
    data.update(overrides)
    return data


@pytest.fixture
def setup(tiny_pair, tmp_path):
    spec = validate_run_spec(config(tiny_pair, tmp_path / "run"))
    tok = student_tokenizer(spec)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(tiny_pair, tmp_path / "run")))
    return spec, tok, fingerprint_of(tok), path


def response(tok, text: str, eos: bool = True) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])


def rows(spec, tok, fp, **change) -> list[dict]:
    teacher = spec.teachers[0].path
    out = [
        {"source": "teacher", "teacher": teacher, "level_bp": 2000, "question_id": Q0, "sample_index": 0,
         "response_text": "one circle", "token_ids": response(tok, "one circle")},
        {"source": "teacher", "teacher": teacher, "level_bp": 0, "question_id": Q1, "sample_index": 1,
         "response_text": "red", "token_ids": response(tok, "red")},
        {"source": "student", "teacher": "", "level_bp": None, "question_id": Q0, "sample_index": 0,
         "response_text": "blue square left", "token_ids": response(tok, "blue square left", eos=False)},
    ]
    for r in out:
        r["tokenizer_fingerprint"] = fp
    for index, fields in change.items():
        out[int(index[1:])].update(fields)
    return out


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_jsonl_and_parquet_rows_are_completed_and_banked(setup, tmp_path):
    spec, tok, fp, _ = setup
    records = rows(spec, tok, fp)
    first = write_jsonl(tmp_path / "a.jsonl", records[:2])
    table = pa.Table.from_pylist([{k: v for k, v in records[2].items() if k != "tokenizer_fingerprint"}])
    table = table.replace_schema_metadata({"tokenizer_fingerprint": fp})
    second = tmp_path / "b.parquet"
    pq.write_table(table, second)
    report = import_files(spec, [first, str(second)])
    assert (report.rows_read, report.rows_written, report.rows_skipped) == (3, 3, 0)
    bank = ResponseBank(tmp_path / "run" / "bank")
    got = {r["row_id"]: r for r in bank.table().to_pylist()}
    teacher = spec.teachers[0].path
    assert set(got) == {f"teacher/{teacher}/2000/{Q0}/0", f"teacher/{teacher}/0/{Q1}/1", f"student/-/-/{Q0}/0"}
    student = got[f"student/-/-/{Q0}/0"]
    assert student["num_tokens"] == 3 and student["truncated"] is False and student["empty"] is False
    assert json.loads(student["generation"])["imported_from"] == str(second)
    assert student["stage_hash"] == bank.manifest()["stage_hash"] and bank.manifest()["tokenizer_fingerprint"] == fp
    # Importing the same files again adds nothing: identical rows are skipped.
    again = import_files(spec, [first, str(second)])
    assert (again.rows_written, again.rows_skipped) == (0, 3) and len(bank.keys()) == 3


def test_truncated_is_derived_from_max_new_tokens(setup, tmp_path):
    spec, tok, fp, _ = setup
    ids = response(tok, "red blue green yellow", eos=False)  # 4 tokens, max_new_tokens 4, no EOS
    record = rows(spec, tok, fp, r0={"response_text": "red blue green yellow", "token_ids": ids})[0]
    import_files(spec, [write_jsonl(tmp_path / "t.jsonl", [record])])
    assert ResponseBank(tmp_path / "run" / "bank").table().to_pylist()[0]["truncated"] is True


def test_the_cli_imports_and_takes_the_fingerprint_as_an_option(setup, tmp_path, capsys):
    spec, tok, fp, config_path = setup
    records = [{k: v for k, v in r.items() if k != "tokenizer_fingerprint"} for r in rows(spec, tok, fp)]
    file = write_jsonl(tmp_path / "a.jsonl", records)
    assert main(["bank", "import", str(config_path), file]) == 2
    assert "names no tokenizer fingerprint" in capsys.readouterr().err
    assert main(["bank", "fingerprint", str(config_path)]) == 0
    assert capsys.readouterr().out.strip() == fp
    assert main(["bank", "import", str(config_path), file, "--tokenizer-fingerprint", fp]) == 0
    assert "rows written" in capsys.readouterr().out
    assert len(ResponseBank(tmp_path / "run" / "bank").keys()) == 3


BAD = {
    "fingerprint": ({"r1": {"tokenizer_fingerprint": "0123456789abcdef"}}, "tokenizer fingerprint"),
    "ids-vs-text": ({"r1": {"response_text": "blue"}}, "decode to"),
    "unknown-question": ({"r1": {"question_id": "nope"}}, "not in the training split"),
    "unknown-teacher": ({"r1": {"teacher": "/elsewhere/model"}}, "not in the config's chain"),
    "level-off-schedule": ({"r1": {"level_bp": 1234}}, "not a level of"),
    "duplicate-key": ({"r1": {"level_bp": 2000, "question_id": Q0, "sample_index": 0}}, "duplicate key"),
    "missing-column": ({"r1": {"token_ids": None}}, "token_ids is not a list"),
    "special-token": ({}, "special token"),
    "out-of-vocab": ({"r1": {"token_ids": [10 ** 6]}}, "outside the tokenizer"),
    "bad-source": ({"r1": {"source": "oracle"}}, "neither"),
    "student-with-level": ({"r2": {"level_bp": 0}}, "student row has"),
    "row-id-mismatch": ({"r1": {"row_id": "teacher/x/0/q/0"}}, "does not match"),
    "unknown-column": ({"r1": {"prompt": "hi"}}, "unknown column"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_row_is_refused_naming_file_and_row_and_nothing_is_written(setup, tmp_path, case):
    spec, tok, fp, _ = setup
    change, message = BAD[case]
    records = rows(spec, tok, fp, **change)
    if case == "missing-column":
        del records[1]["token_ids"]
        message = "missing column(s) token_ids"
    if case == "special-token":
        records[1]["token_ids"] = [tok.convert_tokens_to_ids("<image>"), *records[1]["token_ids"]]
    file = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        import_files(spec, [file])
    assert err.value.where == (f"{file}, row 2" if case != "student-with-level" else f"{file}, row 3")
    assert len(ResponseBank(tmp_path / "run" / "bank").keys()) == 0


def test_malformed_and_unknown_files_exit_2(setup, tmp_path, capsys):
    _, _, _, config_path = setup
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"source": "teacher"}\n{not json\n')
    assert main(["bank", "import", str(config_path), str(broken)]) == 2
    assert f"{broken}, row 2" in capsys.readouterr().err
    other = tmp_path / "rows.csv"
    other.write_text("a,b\n")
    assert main(["bank", "import", str(config_path), str(other)]) == 2
    assert "unknown file type" in capsys.readouterr().err


def test_generated_rows_reimport_as_identical_and_conflicts_name_the_row(tiny_pair, tmp_path):
    from masters.engine.generation import generate_bank

    spec = validate_run_spec(config(tiny_pair, tmp_path / "run", data={"source": "shapes", "n_train": 2,
                                                                        "n_validation": 0, "n_test": 1}))
    generate_bank(spec, progress=False)
    bank = ResponseBank(tmp_path / "run" / "bank")
    table = bank.table()
    table = table.replace_schema_metadata({"tokenizer_fingerprint": bank.manifest()["tokenizer_fingerprint"]})
    export = tmp_path / "export.parquet"
    pq.write_table(table, export)  # the full schema, derived columns included
    report = import_files(spec, [export])
    assert (report.rows_written, report.rows_skipped) == (0, table.num_rows)

    records = table.to_pylist()
    tok = student_tokenizer(spec)
    records[1]["token_ids"] = response(tok, "triangle top")
    records[1]["response_text"] = "triangle top"
    records[1]["num_tokens"] = len(records[1]["token_ids"])
    records[1]["empty"] = False
    conflict = tmp_path / "conflict.jsonl"
    write_jsonl(conflict, [{**r, "tokenizer_fingerprint": bank.manifest()["tokenizer_fingerprint"]} for r in records])
    with pytest.raises(DataError, match="already banked with a different response") as err:
        import_files(spec, [conflict])
    assert err.value.where == f"{conflict}, row 2" and records[1]["row_id"] in err.value.message
