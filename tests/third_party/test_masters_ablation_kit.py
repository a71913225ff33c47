"""A third-party plugin package, written from the public docs, found as a real distribution and run
by name through the real CLI.

``masters_ablation_kit/`` (next to this file) imports only ``masters.api``. The session fixture
``site`` "installs" it the way pip would: a copy of the package plus a ``*.dist-info`` (METADATA and
entry_points.txt) in a temporary directory that goes on ``sys.path`` / ``PYTHONPATH``. The suite
turns plugin autoload off, so every use allow-lists it by entry-point name (``MASTERS_PLUGINS``).

The two CLI runs (``masters run`` and ``masters ablate``) are started in the background as soon as
the tiny checkpoints exist, and the in-process checks (conformance kits, specs) run meanwhile:
each CLI process spends most of its time importing torch and transformers.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = "masters_ablation_kit"
DISTRIBUTION = "masters-ablation-kit"
VERSION = "0.1.0"
ENTRY_POINT = "masters_ablation_kit"
NAMES = {"masker": "ablation_columns", "schedule": "two_level", "reward": "first_word",
         "objective": "reward_weighted_kd", "task": "color_blocks", "adapter": "idefics2"}
CLI_TIMEOUT = 300


# -- an installed distribution, in a temporary site directory ----------------------------------


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """A site directory holding the package and its dist-info, on sys.path for this session."""
    import importlib

    root = tmp_path_factory.mktemp("site")
    shutil.copytree(HERE / PACKAGE, root / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    info = root / f"{PACKAGE}-{VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {VERSION}\n"
        "Summary: A masters plugin: a column masker, a two-level schedule, an accuracy reward, a "
        "reward-weighted KD objective, a synthetic task and an Idefics2 adapter.\n"
        "Requires-Dist: masters-distill>=0.1\n")
    (info / "entry_points.txt").write_text(f"[masters]\n{ENTRY_POINT} = {PACKAGE}.hooks\n")
    (info / "top_level.txt").write_text(f"{PACKAGE}\n")
    (info / "INSTALLER").write_text("tests/third_party\n")
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]  # import the installed copy, not the source folder pytest put on sys.path
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    yield root
    sys.path.remove(str(root))
    importlib.invalidate_caches()


@pytest.fixture
def components(site):
    """masters' components with exactly this plugin allow-listed (autoload stays off, strict)."""
    from masters.testing import allow_plugins

    with allow_plugins(ENTRY_POINT) as loaded:
        yield loaded


def _env(site: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "MASTERS_DISABLE_PLUGIN_AUTOLOAD": "1",
            "MASTERS_PLUGINS": ENTRY_POINT, "MASTERS_STRICT_PLUGINS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


class _Job:
    """A CLI command running in the background; ``result()`` waits for it."""

    def __init__(self, site: Path, args: list[str], cwd: Path):
        self.args = args
        self.log = cwd / f"{args[0]}.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "masters.cli", *args], env=_env(site), cwd=cwd,
                                     stdout=self._out, stderr=subprocess.STDOUT, text=True)

    def result(self) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=CLI_TIMEOUT)
        finally:
            self._out.close()
        return code, self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


# -- tiny checkpoints and the two CLI runs, started early ------------------------------------------


@pytest.fixture(scope="session")
def tiny_pair(site, tmp_path_factory):
    """A tiny Idefics2 teacher and a smaller student sharing masters' word-level tokenizer."""
    from masters_ablation_kit.tiny import build_tiny_idefics2

    root = tmp_path_factory.mktemp("idefics2")
    build_tiny_idefics2(root / "teacher", size="tiny", seed=1)
    build_tiny_idefics2(root / "student", size="micro", seed=2)
    return root / "teacher", root / "student"


def _config(out: Path, teacher: Path, student: Path) -> dict:
    return {
        "output_dir": str(out),
        "teacher": {"path": str(teacher), "adapter": NAMES["adapter"]},
        "student": {"path": str(student), "adapter": NAMES["adapter"]},
        "masker": {"name": NAMES["masker"], "score": "magnitude"},
        "schedule": {"name": NAMES["schedule"], "r_max": 0.23},  # no step: 0.23 is no multiple of 0.05
        "rewards": [NAMES["reward"]],
        "objective": NAMES["objective"],
        "task": {"name": NAMES["task"], "n_train": 4, "n_test": 4},
        "generation": {"n_teacher_responses": 2, "n_student_responses": 2, "max_new_tokens": 4, "batch_size": 8},
        "training": {"n_teacher": 1, "n_student": 1, "questions_per_step": 2, "learning_rate": 1e-3},
    }


@pytest.fixture(scope="session")
def cli_jobs(site, tiny_pair, tmp_path_factory):
    """``masters run`` and ``masters ablate --grid objective=...`` on their own configs, in the
    background (each writes its own bank)."""
    teacher, student = tiny_pair
    root = tmp_path_factory.mktemp("cli")
    jobs = {}
    for command, extra in (("run", []), ("ablate", ["--grid", f"objective={NAMES['objective']},sft"])):
        work = root / command
        work.mkdir()
        config = work / "config.yaml"
        config.write_text(json.dumps(_config(work / "out", teacher, student), indent=1))  # YAML is a superset of JSON
        jobs[command] = (_Job(site, [command, str(config), *extra], work), work / "out")
    yield jobs
    for job, _ in jobs.values():
        job.stop()


def test_cli_runs_start(cli_jobs):
    assert set(cli_jobs) == {"run", "ablate"}  # started here; the tests at the end collect them


# -- found and loaded like any installed plugin ----------------------------------------------------


def test_entry_point_comes_from_the_dist_info(site):
    from importlib import metadata

    (ep,) = [ep for ep in metadata.entry_points(group="masters") if ep.name == ENTRY_POINT]
    assert ep.value == f"{PACKAGE}.hooks"
    assert ep.dist.metadata["Name"] == DISTRIBUTION and ep.dist.version == VERSION


def test_allow_listing_registers_every_component_from_the_distribution(components):
    for kind, name in NAMES.items():
        origin = components.registry(kind).origin(name)
        assert (origin.plugin, origin.distribution, origin.version) == (ENTRY_POINT, DISTRIBUTION, VERSION), kind
    assert components.plugins[ENTRY_POINT].registers == {kind: [name] for kind, name in NAMES.items()}
    assert not components.failures


def test_masters_list_shows_the_components_and_imports_no_torch(site, tmp_path):
    # `masters list --json`, run as `python -m masters.cli` would run it, then a look at what it imported
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["masters", "list", "--json"]
        try:
            runpy.run_module("masters.cli", run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as exc:
            status = exc.code
        assert "{PACKAGE}.specs" in sys.modules, "the plugin was not loaded"
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "listing imported torch"
        sys.exit(status)
    """)
    done = subprocess.run([sys.executable, "-c", code], env=_env(site), cwd=tmp_path, capture_output=True,
                          text=True, timeout=CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = {(row["kind"], row["name"]): row["distribution"] for row in json.loads(done.stdout)}
    for kind, name in NAMES.items():
        assert listed[(kind, name)] == DISTRIBUTION


def test_the_package_imports_only_masters_api():
    for path in (HERE / PACKAGE).glob("*.py"):
        tree = ast.parse(path.read_text())
        used = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m for m in used if m.split(".")[0] == "masters"} <= {"masters.api"}, path.name


# -- behaviour of each component -----------------------------------------------------------------


def test_two_level_schedule_validates_any_r_max_and_has_two_levels(components):
    from masters.api import Ratio, SpecError, validate_component

    with pytest.raises(SpecError):  # a stepped schedule refuses 0.23 (0.05 does not divide it) ...
        validate_component("schedule", {"name": "staircase", "r_max": 0.23})
    spec = validate_component("schedule", {"name": NAMES["schedule"], "r_max": 0.23})  # ... this one has no step
    schedule = spec.build()
    assert list(schedule.levels()) == [Ratio.parse("0.23"), Ratio.parse(0)]
    assert [schedule.stage_at(Fraction(i, 4)) for i in range(5)] == [0, 0, 1, 1, 1]
    assert schedule.ratio_at(Fraction(1, 3)) == Ratio.parse("0.23") and schedule.ratio_at(1) == Ratio.parse(0)
    assert list(validate_component("schedule", {"name": NAMES["schedule"], "r_max": 0}).build().levels()) == [Ratio.parse(0)]
    with pytest.raises(SpecError, match="switch_a"):
        validate_component("schedule", {"name": NAMES["schedule"], "switch_a": 0.5})


def test_first_word_reward_scores_responses(components):
    from masters.api import AccuracyReward, ScoredResponse, validate_component

    reward = validate_component("reward", NAMES["reward"]).build()
    assert isinstance(reward, AccuracyReward)
    items = [ScoredResponse("what color ?", "Red.", "red"), ScoredResponse("what color ?", "blue red", "red"),
             ScoredResponse("side ?", "left side", "left"), ScoredResponse("?", "red", "")]
    assert reward.score(items) == [1.0, 0.0, 1.0, None]


def test_column_masker_masks_within_columns(components):
    import torch

    from masters.api import UnitLayout, validate_component

    masker = validate_component("masker", NAMES["masker"]).build()
    assert masker.units("w", torch.Size([3, 4])) == UnitLayout.columns((3, 4))
    signed = validate_component("masker", {"name": NAMES["masker"], "score": "value"}).build()
    values = torch.tensor([[-3.0, 1.0], [2.0, -0.5]])
    positions = lambda: None  # noqa: E731
    assert torch.equal(masker.scores("w", values, shape=values.shape, positions=positions), values.abs())
    assert torch.equal(signed.scores("w", values, shape=values.shape, positions=positions), values)


def test_task_builds_a_small_deterministic_synthetic_task(components):
    from masters.api import validate_component

    spec = validate_component("task", {"name": NAMES["task"], "n_train": 6, "n_validation": 2, "n_test": 3})
    splits, again = spec.build().splits(), spec.build().splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "validation": 2, "test": 3}
    ids = [s.id for split in splits.values() for s in split]
    assert len(set(ids)) == len(ids) == 11 and ids == [s.id for split in again.values() for s in split]
    first = splits["train"][0]
    assert first.answer in {"red", "blue", "green", "yellow"} and first.images[0].size == (32, 32)
    assert splits["train"][1].answer in {"left", "right"} and splits["train"][1].images[0].size == (48, 48)


def test_objective_declares_its_needs_and_weights_the_divergence(components):
    import torch

    from masters.api import StepInputs, validate_component

    spec = validate_component("objective", {"name": NAMES["objective"], "floor": 0.5})
    needs = spec.requirements()
    assert (needs.responses, needs.teacher) == ("bank", "schedule")
    assert needs.signals == {"student_logprobs", "teacher_divergence", "accuracy_rewards"}
    divergence = torch.tensor([[1.0, 1.0], [2.0, 0.0]], requires_grad=True)
    inputs = StepInputs(student_logprobs=torch.zeros(2, 2), mask=torch.tensor([[1, 1], [1, 0]]).bool(),
                        teacher_divergence=divergence, rewards={"first_word": torch.tensor([1.0, 0.0])})
    loss = spec.build().loss(inputs)
    loss.total.backward()
    assert loss.total.item() == pytest.approx((1.0 * 1.0 + 0.5 * 2.0) / 2)  # sequence means, then the batch
    assert divergence.grad is not None and loss.metrics["loss/total"] == pytest.approx(loss.total.item())


def test_adapter_claims_idefics2_by_model_type_and_overrides_no_private_method(components, tiny_pair):
    from masters.api import HFVLMAdapter, adapter_spec_for

    from masters_ablation_kit.adapter import Idefics2Adapter

    assert adapter_spec_for(tiny_pair[0]).name == NAMES["adapter"]
    own = [n for n in vars(Idefics2Adapter) if n.startswith("_") and not n.startswith("__")]
    assert own == [] and issubclass(Idefics2Adapter, HFVLMAdapter)


# -- the conformance kits --------------------------------------------------------------------------


def _adapter_checks():
    from masters.testing import CHECKS

    return CHECKS


@pytest.mark.parametrize("check", _adapter_checks())
def test_adapter_conformance(components, check):
    from masters.testing import run_check

    run_check(NAMES["adapter"], check)  # on Idefics2Adapter.tiny_checkpoint(), built once per process


@pytest.mark.parametrize("score", ["magnitude", "value"])
def test_masker_conformance(components, score):
    from masters.testing.maskers import check_masker

    check_masker({"name": NAMES["masker"], "score": score})


def test_distribution_conformance_every_other_kind(components):
    # the dispatcher finds every component this distribution registers; the adapter's checks run
    # one test each above, so they are left out here
    from masters.testing import check_distribution

    kinds = [kind for kind in NAMES if kind != "adapter"]
    results = check_distribution(DISTRIBUTION, kinds=kinds)
    for kind in kinds:
        assert any(NAMES[kind] in case for case in results), (kind, sorted(results))
    assert all(v == "ok" or v.startswith("n/a") for v in results.values()), results


# -- by name through the real CLI: `masters run` and `masters ablate` -----------------------------


def test_masters_run_uses_every_component_by_name(cli_jobs):
    job, out = cli_jobs["run"]
    code, log = job.result()
    assert code == 0, log[-4000:]
    record = json.loads((out / "student" / "masters_run.json").read_text())
    assert record["components"] == {"masker": NAMES["masker"], "schedule": NAMES["schedule"],
                                    "rewards": [NAMES["reward"]], "objective": NAMES["objective"],
                                    "task": NAMES["task"], "backend": "hf",
                                    "adapters": {"student": NAMES["adapter"], "teachers": [NAMES["adapter"]]}}
    assert record["method"] == NAMES["objective"] and record["steps"] == 2
    assert record["provenance"]["plugins"] == {DISTRIBUTION: VERSION}
    assert json.loads((out / "student" / "masters_adapter.json").read_text()) == {"adapter": NAMES["adapter"]}
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == {"generate", "score", "train", "evaluate"}
    # the student's 4 x 2 rows, and the teacher's 2 x 2 at each of the two levels 0.23 and 0
    assert stages["generate"]["summary"]["rows_written"] == 16
    assert set(stages["score"]["summary"]["mean"]) == {NAMES["reward"]}
    assert set(stages["evaluate"]["summary"]["accuracy"]) == {NAMES["reward"]}


def test_masters_ablate_has_one_row_per_grid_cell(cli_jobs):
    job, out = cli_jobs["ablate"]
    code, log = job.result()
    assert code == 0, log[-4000:]
    results = json.loads((out / "ablate" / "results.json").read_text())
    cells = {cell["grid.objective"]: cell for cell in results["cells"]}
    assert sorted(cells) == sorted([NAMES["objective"], "sft"]) and len(results["cells"]) == 2
    for objective, cell in cells.items():
        assert cell["components"]["objective"] == objective
        assert {k: cell["components"][k] for k in ("masker", "schedule", "task")} == \
            {k: NAMES[k] for k in ("masker", "schedule", "task")}
        assert cell["components"]["rewards"] == [NAMES["reward"]]
        assert cell["provenance"]["plugins"] == {DISTRIBUTION: VERSION}
        assert f"accuracy.{NAMES['reward']}" in cell
    assert [row["setting"] for row in results["summary"]] == [f"objective={NAMES['objective']}", "objective=sft"]
    csv_rows = (out / "ablate" / "results.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 2  # header + one row per cell
