"""Issue 14: bad inputs and a hostile file system through the real CLI, in subprocesses.

Every case exits 2 with one message naming the place and the fix, no traceback, and leaves the
earlier outputs byte-for-byte as they were. The cases run grouped in one subprocess
(tests/cli_cases.py) so 60+ of them cost one interpreter start; the lock, the file-size limit and
the rerun-after-the-fix cases run as their own ``python -m masters.cli`` processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from masters.bank.schema import row_id
from masters.bank.store import ResponseBank
from masters.files import LOCK_NAME, OWNER_MARK

HERE = Path(__file__).parent
ENV = {**os.environ, "MASTERS_DISABLE_PLUGIN_AUTOLOAD": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cli(*argv: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masters.cli", *argv], capture_output=True, text=True,
                          timeout=300, env={**ENV, **(env or {})}, **kw)


def snapshot(*roots: Path) -> dict[str, str]:
    """Hashes of every file under ``roots`` but masters' own marker and lock (created on claim)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.name not in (OWNER_MARK, LOCK_NAME):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def bank_row(q: int, k: int) -> dict:
    return {"row_id": row_id("teacher", "t", 2000, f"q{q}", k), "source": "teacher", "teacher": "t", "level_bp": 2000,
            "question_id": f"q{q}", "sample_index": k, "response_text": "red", "token_ids": [5, 2], "num_tokens": 2,
            "truncated": False, "empty": False, "seed": 1, "generation": "{}", "stage_hash": "h",
            "behaviour_logprobs": None}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fake model dirs, data files, an earlier run with a bank, and config files for every case."""
    root = tmp_path_factory.mktemp("faults")
    fake = root / "fake-model"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (root / "bad-json-model").mkdir()
    (root / "bad-json-model" / "config.json").write_text("{not json")
    (root / "latin1-model").mkdir()
    (root / "latin1-model" / "config.json").write_bytes(b'{"model_type": "caf\xe9"}')
    (root / "no-type-model").mkdir()
    (root / "no-type-model" / "config.json").write_text("{}")
    (root / "empty-model").mkdir()
    (root / "a-file").write_text("user data\n")
    (root / "foreign").mkdir()
    (root / "foreign" / "thesis.tex").write_text("\\documentclass{article}\n")
    (root / "data.json").write_text("[{not json")
    (root / "latin1.json").write_bytes(b'[{"id": "caf\xe9"}]')
    (root / "bad.jsonl").write_text('{"id": 1}\n{oops\n')
    (root / "rows.jsonl").write_bytes(b'{"row_id": "caf\xe9"}\n')
    prior = root / "prior"  # an earlier run: a bank, stages.json, a student
    bank = ResponseBank.open(prior / "bank", stage_hash="h", tokenizer_fingerprint="f")
    bank.append([bank_row(0, 0), bank_row(0, 1)])
    (prior / "stages.json").write_text(json.dumps({"generate": {"identity": "x", "seconds": 1.0, "summary": {}}}))
    (prior / "student").mkdir()
    (prior / "student" / "masters_run.json").write_text("{}\n")
    (prior / "user-notes.tmp").write_text("the user's own *.tmp file\n")
    corrupt = root / "corrupt"  # earlier runs with a damaged file each
    for name, files in {"bad-manifest": {"bank/bank.json": "{oops"}, "list-manifest": {"bank/bank.json": "[1]"},
                        "bad-shard": {"bank/bank.json": "{}", "bank/shards/part-0123456789ab.parquet": "garbage"},
                        "empty-bank": {"bank/bank.json": "{}"}, "bad-stages": {"stages.json": "{oops"}}.items():
        for rel, text in files.items():
            path = corrupt / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    base = {"teacher": str(fake), "student": str(fake), "output_dir": str(root / "out"),
            "task": {"name": "shapes", "n_train": 4, "n_validation": 0, "n_test": 2},
            "rewards": ["exact_match"]}
    configs = root / "configs"
    configs.mkdir()

    def config(name: str, **changes) -> str:
        data = {**base, **changes}
        path = configs / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    def raw(name: str, text: str | bytes) -> str:
        path = configs / f"{name}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    return {"root": root, "prior": prior, "fake": fake, "config": config, "raw": raw, "corrupt": corrupt, "base": base}


def cases(w) -> list[dict]:
    root, config, raw, corrupt = w["root"], w["config"], w["raw"], w["corrupt"]
    good = yaml.safe_dump(w["base"])
    c: list[dict] = []

    def case(cid: str, argv: list[str], *expect: str, env: dict | None = None, fix: bool = True) -> None:
        c.append({"id": cid, "argv": argv, "env": env or {}, "expect": list(expect), "fix": fix})

    # -- values and the config file (class 5) -------------------------------------------------
    case("unknown-masker", ["validate", "--no-paths", raw("v1", good + "masker: magnitud\n")], "Did you mean: magnitude")
    case("misspelt-field", ["validate", "--no-paths", raw("v2", good + "training: {lerning_rate: 1.0}\n")],
         "training.lerning_rate")
    case("wrong-type", ["validate", "--no-paths", raw("v3", good + "training: {n_teacher: four}\n")], "training.n_teacher")
    case("top-p-range", ["validate", "--no-paths", raw("v4", good + "generation: {top_p: 1.5}\n")], "generation.top_p")
    case("negative-seed", ["validate", "--no-paths", raw("v5", good + "seed: -1\n")], "seed")
    case("huge-seed", ["validate", "--no-paths", raw("v6", good + f"seed: {2**70}\n")], "seed")
    case("negative-lr", ["validate", "--no-paths", raw("v7", good + "training: {learning_rate: -1}\n")],
         "training.learning_rate")
    case("zero-batch", ["validate", "--no-paths", raw("v8", good + "generation: {batch_size: 0}\n")],
         "generation.batch_size")
    case("inf-float", ["validate", "--no-paths", raw("v9", good + "training: {learning_rate: .inf}\n")],
         "training.learning_rate")
    case("nan-float", ["validate", "--no-paths", raw("v10", good + "generation: {temperature: .nan}\n")],
         "generation.temperature")
    case("step-divides", ["validate", "--no-paths", raw("v11", good + "schedule: {name: staircase, r_max: 0.3, step: 0.07}\n")],
         "does not divide")
    case("nul-in-path", ["validate", raw("v12", good.replace(str(root / "out"), str(root / "out") + "\\0x")
                                         .replace("output_dir: ", 'output_dir: "', 1).replace("\\0x\n", '\\0x"\n', 1))],
         "NUL byte", "output_dir")
    case("nul-in-key", ["validate", raw("v13", good + '"ev\\0il": 1\n')], "NUL byte")
    case("duplicate-key", ["validate", raw("v14", good + "seed: 1\nseed: 2\n")], "duplicate key 'seed'")
    case("malformed-yaml", ["validate", raw("v15", "teacher: t\nstudent: [s\n")], "malformed YAML")
    case("not-a-mapping", ["validate", raw("v16", "- a\n- b\n")], "top level must be a mapping")
    case("missing-config", ["validate", str(root / "nope.yaml")], "config file not found")
    case("config-is-dir", ["validate", str(root)], "is a directory")
    case("non-utf8-config", ["validate", raw("v17", b"teacher: caf\xe9\n")], "cannot read config")
    case("huge-config", ["validate", raw("v18", "# " + "x" * (2**20 + 10) + "\n")], "larger than 1 MiB")
    case("deep-nesting", ["validate", raw("v19", "a: " + "[" * 80 + "]" * 80 + "\n")], "nested deeper")
    case("alias-bomb", ["validate", raw("v20", "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{n}: &{n} [{','.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef")))], "alias expansions")
    case("unknown-stage", ["run", config("r1", output_dir=str(root / "o-stage")), "--stages", "generate,tran"],
         "unknown stage(s) tran")
    case("int-option", ["evaluate", config("e0"), "--max-new-tokens", "0"], "error: argument", fix=False)
    case("threads-option", ["demo", "--threads", "-1"], "error: argument", fix=False)
    # ablate --grid parse errors
    for i, (grid, expect) in enumerate([("seed", "cannot read grid entry"), ("=1,2", "cannot read grid entry"),
                                        ("training..lr=1", "empty part"), ("seed=[1,2", "unbalanced brackets"),
                                        ("seed=1,,2", "empty value"), ("seed={a: [}", "unbalanced"),
                                        ("seed=@x", "malformed YAML")]):
        case(f"grid-{i}", ["ablate", config("a0"), "--grid", grid], expect)
    case("grid-duplicate", ["ablate", config("a1"), "--grid", "seed=1", "--grid", "seed=2"], "given twice")
    case("grid-width", ["ablate", config("a2"), "--grid", "training.n_teacher+training.n_student=4,[1,2]"],
         "moves 2 keys together")
    # empty splits and banks
    case("empty-validation-split", ["evaluate", config("e1", output_dir=str(root / "o-empty")), "--split", "validation"],
         "validation split is empty")
    case("empty-bank", ["score", config("s0", output_dir=str(corrupt / "empty-bank"))], "holds no responses")
    case("no-bank", ["score", config("s1", output_dir=str(root / "o-nobank"))], "not a response bank")

    # -- paths `validate` checks (class 3) -----------------------------------------------------
    case("teacher-missing", ["validate", config("p1", teacher=str(root / "nowhere"))], "teacher", "not found",
         "--no-paths")
    case("student-is-file", ["validate", config("p2", student=str(root / "a-file"))], "student", "is a file")
    case("model-without-config", ["validate", config("p3", student=str(root / "empty-model"))], "no config.json")
    case("data-missing", ["validate", config("p4", task={"name": "llava_json", "path": str(root / "none.json")})],
         "task.path")
    case("image-root-missing", ["validate", config("p5", task={"name": "llava_json", "path": str(root / "data.json"),
                                                               "image_root": str(root / "noimg")})], "task.image_root")
    case("output-is-file", ["validate", config("p6", output_dir=str(root / "a-file"))], "output_dir", "regular file")
    case("output-foreign", ["validate", config("p7", output_dir=str(root / "foreign"))], "output_dir", "non-empty")
    case("bank-dir-is-file", ["validate", config("p8", bank_dir=str(root / "a-file"))], "bank_dir", "regular file")
    case("output-under-file", ["validate", config("p9", output_dir=str(root / "a-file" / "run"))], "regular file")

    # -- guarded loads (class 3) ---------------------------------------------------------------
    case("student-dir-missing", ["generate", config("g1", student=str(root / "nowhere"), output_dir=str(root / "o-g1"))],
         "student checkpoint directory not found")
    case("tokenizer-missing", ["generate", config("g2", output_dir=str(root / "o-g2"))], "tokenizer", str(w["fake"]))
    case("checkpoint-missing", ["evaluate", config("e2", output_dir=str(root / "o-e2")), "--model", str(root / "gone")],
         "checkpoint directory not found")
    case("config-json-corrupt", ["evaluate", config("e3", output_dir=str(root / "o-e3")), "--model",
                                 str(root / "bad-json-model")], "config.json", "JSONDecodeError")
    case("config-json-latin1", ["evaluate", config("e4", output_dir=str(root / "o-e4")), "--model",
                                str(root / "latin1-model")], "config.json", "UnicodeDecodeError")
    case("config-json-no-type", ["evaluate", config("e5", output_dir=str(root / "o-e5")), "--model",
                                 str(root / "no-type-model")], "no model_type")
    case("data-json-corrupt", ["evaluate", config("e6", task={"name": "llava_json", "path": str(root / "data.json")})],
         "data.json", "not valid JSON")
    case("data-json-latin1", ["evaluate", config("e7", task={"name": "llava_json", "path": str(root / "latin1.json")})],
         "latin1.json", "UnicodeDecodeError")
    case("data-jsonl-line", ["evaluate", config("e8", task={"name": "llava_json", "path": str(root / "bad.jsonl")})],
         "bad.jsonl:2")
    case("bank-json-corrupt", ["score", config("s2", output_dir=str(corrupt / "bad-manifest"))], "bank.json")
    case("bank-json-not-object", ["score", config("s3", output_dir=str(corrupt / "list-manifest"))], "not a JSON object")
    case("bank-shard-corrupt", ["score", config("s4", output_dir=str(corrupt / "bad-shard"))],
         "part-0123456789ab.parquet", "delete this file")
    case("stages-json-corrupt", ["run", config("r2", output_dir=str(corrupt / "bad-stages"))], "stages.json")

    # -- owned outputs (class 1) ---------------------------------------------------------------
    case("generate-foreign-dir", ["generate", config("g3", output_dir=str(root / "foreign"))], "not empty",
         "thesis.tex")
    case("generate-output-is-file", ["generate", config("g4", output_dir=str(root / "a-file"))], "regular file")
    case("train-foreign-dir", ["train", config("t1", output_dir=str(root / "foreign"))], "not empty")
    case("run-foreign-dir", ["run", config("r3", output_dir=str(root / "foreign"))], "not empty")
    case("demo-foreign-dir", ["demo", "--output", str(root / "foreign")], "not empty")
    case("demo-output-is-file", ["demo", "--output", str(root / "a-file")], "regular file")
    case("output-under-a-file", ["generate", config("g5", output_dir=str(root / "a-file" / "sub"))],
         "regular file, not a directory")

    # -- the file system (class 4), injected through the test-only hook -------------------------
    for name, expect in [("ENOSPC", "no space left"), ("EROFS", "read-only file system"),
                         ("EACCES", "permission denied"), ("EFBIG", "file-size limit"), ("EDQUOT", "quota"),
                         ("EIO", "input/output error")]:
        case(f"fs-{name}-generate", ["generate", config(f"f-{name}", output_dir=str(root / f"o-{name}"))], expect,
             "run the same command again" if name not in ("EDQUOT", "EIO") else "fix:",
             env={"MASTERS_TEST_FS_FAULT": name})
    case("fs-ENOSPC-repair", ["bank", "repair", config("f-rep", output_dir=str(w["prior"]))], "no space left",
         env={"MASTERS_TEST_FS_FAULT": "ENOSPC:shards"})
    return c


@pytest.fixture(scope="module")
def duplicated_prior(world):
    """The earlier run's bank with every row banked twice (two writers raced before locks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from masters.bank.schema import BANK_SCHEMA

    shards = world["prior"] / "bank" / "shards"
    for p in list(shards.glob("*.parquet")):
        shutil.copy(p, shards / "part-ffffffffffff.parquet")
    # and one shard holding a copy and a new row: repairing it writes a shard (the fault case's write)
    pq.write_table(pa.Table.from_pylist([bank_row(0, 0), bank_row(1, 0)], schema=BANK_SCHEMA),
                   shards / "part-000000000000.parquet")
    return world["prior"]


def test_sixty_bad_inputs_exit_2_with_place_and_fix_and_nothing_changes(world, duplicated_prior, tmp_path):
    todo = cases(world)
    assert len(todo) >= 60
    before = snapshot(world["prior"], world["corrupt"], world["root"] / "foreign", world["root"] / "configs")
    before_file = (world["root"] / "a-file").read_bytes()
    spec, result = tmp_path / "cases.json", tmp_path / "results.json"
    spec.write_text(json.dumps([{k: v for k, v in c.items() if k in ("id", "argv", "env")} for c in todo]))
    done = subprocess.run([sys.executable, str(HERE / "cli_cases.py"), str(spec), str(result)], capture_output=True,
                          text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["id"]: r for r in json.loads(result.read_text())}
    failures = []
    for c in todo:
        r = results[c["id"]]
        err = " ".join(r["stderr"].split())
        problems = [p for p, bad in (("exit", r["code"] != 2), ("traceback", "Traceback" in r["stderr"]),
                                     ("fix", c["fix"] and "fix:" not in err)) if bad]
        problems += [f"missing {e!r}" for e in c["expect"] if " ".join(e.split()) not in err]
        if problems:
            failures.append(f"{c['id']}: {problems}: code {r['code']}: {r['stderr'][-600:]}")
    assert not failures, "\n".join(failures)
    assert snapshot(world["prior"], world["corrupt"], world["root"] / "foreign", world["root"] / "configs") == before
    assert (world["root"] / "a-file").read_bytes() == before_file
    assert (world["prior"] / "user-notes.tmp").exists()


def test_after_the_cause_is_fixed_the_rerun_completes(world, duplicated_prior):
    """The full disk of fs-ENOSPC-repair is gone: the same command now repairs the bank."""
    cfg = world["config"]("fixed-rep", output_dir=str(duplicated_prior))
    done = cli("bank", "repair", cfg)
    assert done.returncode == 0, done.stderr
    assert "shards: 3 duplicate copies removed" in " ".join(done.stdout.split())
    assert len(ResponseBank(duplicated_prior / "bank")) == 3


def test_a_second_writer_exits_2_naming_the_holder_and_a_dead_holder_is_taken_over(world, tmp_path):
    out = tmp_path / "busy"
    (out / "bank").mkdir(parents=True)
    (out / "bank" / "bank.json").write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", (  # as `masters generate` does: the run and its bank
        "import sys, time; from masters.engine.locks import stage_outputs\n"
        f"with stage_outputs({str(out)!r}, 'generate'), stage_outputs({str(out / 'bank')!r}, 'generate'):\n"
        "    print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = world["config"]("busy", output_dir=str(out))
        spec, result = tmp_path / "c.json", tmp_path / "r.json"
        spec.write_text(json.dumps([{"id": s, "argv": [s, cfg], "env": {}} for s in ("generate", "score", "train",
                                                                                      "run", "evaluate")]))
        subprocess.run([sys.executable, str(HERE / "cli_cases.py"), str(spec), str(result)], timeout=300, env=ENV,
                       check=True)
        for r in json.loads(result.read_text()):
            assert r["code"] == 2 and "Traceback" not in r["stderr"], r
            err = " ".join(r["stderr"].split())
            assert f"pid {holder.pid}" in err and "another masters process is writing" in err and "fix:" in err, r
    finally:
        holder.kill()  # as kill -9 would: no cleanup
        holder.wait()
    from masters.engine.locks import directory_lock

    with directory_lock(out, "test"):  # the kernel released the dead holder's lock: taken over at once
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_the_file_size_limit_is_an_error_not_a_kill(world, tmp_path):
    """EFBIG for real, with RLIMIT_FSIZE: SIGXFSZ is ignored, the write fails, the bank is unchanged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from masters.bank.schema import BANK_SCHEMA

    prior = tmp_path / "prior"
    ResponseBank.open(prior / "bank", stage_hash="h", tokenizer_fingerprint="f").append([bank_row(0, 0), bank_row(0, 1)])
    shards = prior / "bank" / "shards"
    # sorted last, a copy and a new row: the repair must write the new row into a new shard
    pq.write_table(pa.Table.from_pylist([bank_row(0, 0), bank_row(2, 0)], schema=BANK_SCHEMA),
                   shards / "part-zzzzzzzzzzzz.parquet")
    before = snapshot(prior)
    cfg = world["config"]("efbig", output_dir=str(prior))
    limit = 1024  # a Parquet shard of this schema is several KiB; the lock and marker files are far smaller
    assert min(p.stat().st_size for p in shards.glob("*.parquet")) > 2 * limit

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = cli("bank", "repair", cfg, preexec_fn=small_files)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    err = " ".join(done.stderr.split())
    assert "File too large" in err or "file-size limit" in err, err
    assert "fix:" in err and snapshot(prior) == before
    assert cli("bank", "repair", cfg).returncode == 0  # the limit lifted: the rerun completes


def test_cleanup_touches_only_masters_temporaries(tmp_path):
    from masters.files import atomic_write, clean_temporaries, temp_sibling

    target = tmp_path / "out" / "result.json"
    atomic_write(target, "{}")
    dead = temp_sibling(target)
    dead = dead.with_name(dead.name.replace(f".{os.getpid()}.", ".999999999."))
    dead.write_text("half")
    mine = [tmp_path / "out" / "notes.tmp", tmp_path / "out" / ".result.json.tmp", tmp_path / "out" / "x.masters-tmp"]
    for p in mine:
        p.write_text("user")
    assert clean_temporaries(tmp_path) == 1 and not dead.exists() and all(p.exists() for p in mine)


def test_atomic_directory_keeps_the_previous_one_on_failure(tmp_path):
    from masters.files import atomic_directory

    student = tmp_path / "student"
    with atomic_directory(student) as tmp:
        (tmp / "model.safetensors").write_text("v1")
    os.environ["MASTERS_TEST_FS_FAULT"] = "ENOSPC:student"
    try:
        with pytest.raises(OSError), atomic_directory(student) as tmp:
            (tmp / "model.safetensors").write_text("v2 half")
    finally:
        del os.environ["MASTERS_TEST_FS_FAULT"]
    assert (student / "model.safetensors").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["student"]


def test_guarded_image_loads(tmp_path):
    from PIL import Image

    from masters.data.types import load_image
    from masters.errors import DataError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="bad.png"):
        load_image(bad, where="sample 'q1'")
    big = tmp_path / "big.png"
    Image.new("L", (64, 64)).save(big)
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 10  # 4096 pixels is then more than twice the limit: a decompression bomb
    try:
        with pytest.raises(DataError, match="DecompressionBombError"):
            load_image(big, where="sample 'q2'")
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_metrics_truncation_survives_a_partial_line_and_is_atomic(tmp_path):
    from masters.engine.trainer import Trainer

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": i}) + "\n" for i in range(4)) + '{"step": 4, "lo')
    os.environ["MASTERS_TEST_FS_FAULT"] = "ENOSPC:metrics"
    try:
        with pytest.raises(OSError):
            Trainer._truncate_metrics(path, 2)
    finally:
        del os.environ["MASTERS_TEST_FS_FAULT"]
    assert path.read_text().count("\n") == 4  # untouched, never emptied
    Trainer._truncate_metrics(path, 2)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [0, 1]


def test_stage_log_counts_every_attempt(tmp_path):
    from masters.engine.pipeline import StageLog

    log = StageLog(tmp_path)
    log.begin("train", "id1")
    log.interrupted("train", 2.0)
    assert not log.done("train", "id1")
    log.begin("train", "id1")
    log.record("train", "id1", 3.0, {"steps": 4})
    entry = log.read()["train"]
    assert log.done("train", "id1") and entry["attempts"] == 2 and entry["seconds"] == 5.0


def test_a_failed_student_save_keeps_the_previous_student_and_the_stage_unclaimed(tiny_pair, tmp_path, monkeypatch):
    from masters.config import validate_run_spec
    from masters.engine.pipeline import StageLog, run_pipeline, stage_identity

    teacher, student = tiny_pair
    data = {"output_dir": str(tmp_path / "run"), "teacher": str(teacher), "student": str(student), "objective": "sft",
            "task": {"name": "shapes", "n_train": 2, "n_validation": 0, "n_test": 2}, "rewards": ["exact_match"],
            "training": {"learning_rate": 1e-3, "questions_per_step": 2}}
    run_pipeline(validate_run_spec(data), progress=False)
    saved = snapshot(tmp_path / "run" / "student")
    again = validate_run_spec({**data, "training": {**data["training"], "learning_rate": 2e-3}})
    # the disk fills while the student is saved
    monkeypatch.setenv("MASTERS_TEST_FS_FAULT", f"ENOSPC:{tmp_path / 'run' / 'student'}")
    with pytest.raises(OSError):
        run_pipeline(again, progress=False)
    assert snapshot(tmp_path / "run" / "student") == saved  # the previous student, whole and loadable
    log = StageLog(tmp_path / "run")
    assert not log.done("train", stage_identity(again, "train"))
    monkeypatch.delenv("MASTERS_TEST_FS_FAULT")
    results = run_pipeline(again, progress=False)  # the disk has room again: the rerun completes
    assert results["train"]["steps"] == 1 and log.done("train", stage_identity(again, "train"))
    assert snapshot(tmp_path / "run" / "student") != saved
    assert log.read()["train"]["attempts"] == 2, log.read()
