"""The bank's on-disk schema: one Parquet row per response.

========================  ==============  ======================================================
column                    type            meaning
========================  ==============  ======================================================
row_id                    string          unique key: ``source/teacher/level_bp/question/sample``
source                    string          ``teacher`` or ``student``
teacher                   string          teacher id within the chain (its path); ``""`` for student
level_bp                  int32 (null)    mask ratio in basis points (2000 = 0.20); null for student
question_id               string          id of the training question
sample_index              int32           0 .. n-1 within (source, teacher, level, question)
response_text             string          decoded response, special tokens removed
token_ids                 list<int32>     response token ids as generated, EOS included if produced
num_tokens                int32           ``len(token_ids)``
truncated                 bool            stopped at ``max_new_tokens`` without EOS
empty                     bool            no visible text after stripping
seed                      int64           sampling seed, derived from (seed, teacher, level, question, sample)
generation                string (JSON)   sampling parameters used for this row
stage_hash                string          hash of the spec fields the generation stage read
behaviour_logprobs        list<float32>   per token, the log-prob of the sampled token under the
                          (null)          distribution actually sampled from (after repetition
                                          penalty, temperature, top-k/top-p, renormalised): mu of
                                          TOPR. Null in banks written before it existed and for
                                          backends without it; ``masters bank behaviour-logprobs``
                                          fills it by teacher-forcing the generator.
========================  ==============  ======================================================

Bank-wide provenance (masker, seed, tokenizer fingerprint, package and plugin versions) lives in
``bank.json`` beside the shards. Accuracy scores live apart, keyed by ``row_id`` (``scores/``).
"""

from __future__ import annotations

import pyarrow as pa

FORMAT = "masters-bank/1"

BANK_SCHEMA = pa.schema([
    pa.field("row_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("teacher", pa.string(), nullable=False),
    pa.field("level_bp", pa.int32(), nullable=True),
    pa.field("question_id", pa.string(), nullable=False),
    pa.field("sample_index", pa.int32(), nullable=False),
    pa.field("response_text", pa.string(), nullable=False),
    pa.field("token_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("num_tokens", pa.int32(), nullable=False),
    pa.field("truncated", pa.bool_(), nullable=False),
    pa.field("empty", pa.bool_(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("generation", pa.string(), nullable=False),
    pa.field("stage_hash", pa.string(), nullable=False),
    pa.field("behaviour_logprobs", pa.list_(pa.float32()), nullable=True),
])
# Columns added after banks were written: a shard without them reads them as null.
LATER_COLUMNS: tuple[str, ...] = ("behaviour_logprobs",)

SCORE_SCHEMA = pa.schema([
    pa.field("row_id", pa.string(), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
])

TEACHER, STUDENT = "teacher", "student"


def row_id(source: str, teacher: str, level_bp: int | None, question_id: str, sample_index: int) -> str:
    level = "-" if level_bp is None else str(level_bp)
    return f"{source}/{teacher or '-'}/{level}/{question_id}/{sample_index}"
