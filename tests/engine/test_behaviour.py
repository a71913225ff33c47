"""The bank's behaviour log-probs (mu): recorded by the sampler, null in older banks, filled by
teacher forcing, and required (with a clear refusal) by negative_advantages: topr."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from masters.bank.schema import BANK_SCHEMA
from masters.bank.store import ResponseBank
from masters.engine.behaviour import FILL_COMMAND, _load, fill_behaviour_logprobs, processed_logprobs
from masters.engine.sampling import LimitVocabulary, PerRowGumbelSampler, filter_top_k_top_p
from masters.errors import MastersError


def test_sampler_records_the_sampled_tokens_log_prob_and_samples_as_before():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 12, generator=g) * 2
    sampler = PerRowGumbelSampler([1, 2, 3], temperature=0.7, top_k=6, top_p=0.9)
    out = sampler(torch.zeros(3, 1, dtype=torch.long), scores)
    # the returned scores are the ones the sampler always returned (rows' draws unchanged)
    logits = filter_top_k_top_p(scores / 0.7, 6, 0.9)
    uniforms = torch.stack([torch.rand(12, generator=torch.Generator().manual_seed(s)) for s in (1, 2, 3)])
    gumbel = -torch.log(-torch.log(uniforms.clamp(min=1e-20, max=1 - 1e-7)))
    assert torch.equal(out, torch.log_softmax(logits, -1) + gumbel)
    chosen = out.argmax(-1)
    want = torch.log_softmax(logits, -1).gather(-1, chosen[:, None]).squeeze(-1)
    assert sampler.behaviour_logprobs(1, 1) == [pytest.approx(float(want[1]))]


def test_teacher_forced_processing_matches_the_sampler_after_a_repetition_penalty():
    from transformers import RepetitionPenaltyLogitsProcessor

    g = torch.Generator().manual_seed(1)
    raw = torch.randn(1, 10, generator=g) * 3
    context = torch.tensor([[4, 2, 2, 7]])
    penalised = RepetitionPenaltyLogitsProcessor(1.05)(context, raw.clone())
    limited = LimitVocabulary(8, [0])(context, penalised)
    sampler = PerRowGumbelSampler([5], temperature=1.0, top_k=5, top_p=0.9)
    token = int(sampler(context, limited).argmax())
    mine = processed_logprobs(raw, [context[0].tolist()], [token], temperature=1.0, top_k=5, top_p=0.9,
                              repetition_penalty=1.05, vocab_limit=8, banned=[0])
    assert mine == [pytest.approx(sampler.behaviour_logprobs(0, 1)[0], abs=1e-6)]


def _old_row(i: int) -> dict:
    return {"row_id": f"student/-/-/q{i}/0", "source": "student", "teacher": "", "level_bp": None,
            "question_id": f"q{i}", "sample_index": 0, "response_text": "red", "token_ids": [5, 3],
            "num_tokens": 2, "truncated": False, "empty": False, "seed": 7, "generation": "{}", "stage_hash": "h"}


def test_a_bank_written_before_the_column_reads_it_as_null(tmp_path):
    bank = ResponseBank.open(tmp_path / "bank", stage_hash="h", tokenizer_fingerprint="f")
    old_schema = pa.schema([f for f in BANK_SCHEMA if f.name != "behaviour_logprobs"])
    bank.shards.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([_old_row(0), _old_row(1)], schema=old_schema), bank.shards / "part-old.parquet")
    table = ResponseBank(tmp_path / "bank").table()
    assert table.column("behaviour_logprobs").to_pylist() == [None, None]
    assert table.column("token_ids").to_pylist() == [[5, 3], [5, 3]]


def test_topr_refuses_rows_without_behaviour_logprobs_naming_the_command(tmp_path):
    bank = ResponseBank.open(tmp_path / "bank", stage_hash="h", tokenizer_fingerprint="f")
    bank.append([{**_old_row(0), "behaviour_logprobs": [-0.1, -0.2]}, {**_old_row(1), "behaviour_logprobs": None}])
    rows = [{"row_id": f"student/-/-/q{i}/0"} for i in range(2)]
    trainer = SimpleNamespace(spec=SimpleNamespace(bank_dir=str(tmp_path / "bank")),
                              plan=[SimpleNamespace(question_ids=["q0", "q1"])],
                              _group_rows=lambda step, q: [rows[int(q[1])]])
    with pytest.raises(MastersError, match="behaviour-logprobs") as err:
        _load(trainer)
    assert "behaviour_logprobs" in str(err.value) and FILL_COMMAND.split(" CONFIG")[0] in err.value.fix


def test_generated_rows_carry_mu_and_the_fill_command_recomputes_it(tiny_pair, tmp_path):
    from masters.config import validate_run_spec
    from masters.engine.generation import bank_dir, generate_bank

    teacher, student = tiny_pair
    spec = validate_run_spec({
        "output_dir": str(tmp_path), "teacher": str(teacher), "student": str(student),
        "task": {"name": "shapes", "n_train": 3, "n_validation": 0, "n_test": 1},
        "schedule": {"name": "staircase", "r_max": 0.1, "step": 0.1},
        "generation": {"n_teacher_responses": 1, "n_student_responses": 1, "max_new_tokens": 4, "batch_size": 3,
                       "repetition_penalty": 1.05, "top_k": 50, "top_p": 0.9},
    })
    generate_bank(spec, progress=False)
    bank = ResponseBank(bank_dir(spec))
    before = bank.table().to_pylist()
    assert all(len(r["behaviour_logprobs"]) == r["num_tokens"] and max(r["behaviour_logprobs"]) <= 0 for r in before)
    # forget them (as an older bank), then fill them by teacher forcing
    for path in bank.shard_paths():
        t = pq.read_table(path)
        t = t.set_column(t.schema.get_field_index("behaviour_logprobs"), BANK_SCHEMA.field("behaviour_logprobs"),
                         pa.nulls(t.num_rows, pa.list_(pa.float32())))
        pq.write_table(t, path)
    counts = fill_behaviour_logprobs(spec)
    assert sum(counts.values()) == len(before)
    after = {r["row_id"]: r for r in ResponseBank(bank_dir(spec)).table().to_pylist()}
    for r in before:
        a = after[r["row_id"]]
        assert (a["token_ids"], a["seed"], a["response_text"]) == (r["token_ids"], r["seed"], r["response_text"])
        assert a["behaviour_logprobs"] == pytest.approx(r["behaviour_logprobs"], abs=1e-4)
