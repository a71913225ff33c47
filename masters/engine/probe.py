"""``masters probe CONFIG``: the calibration gates a testbed must pass before any training (issue 13).

A task tests the Masters method only if the premises the method rests on hold on it (method.md
section 8). The probe measures them on the **train and validation splits only** (the test split is
never read) and stops with exit status 2, naming the gate, its value and the fix, when one fails:

G1 capacity gap
    Greedy accuracy (the run's first accuracy reward) of the unmasked teacher minus that of the
    student, on at least ``min_validation`` (2000) validation questions: at least 0.15. And the
    student is at its plateau: the gain of its validation accuracy over the last quarter of its
    warm-up (``plateau.json`` beside the student, written by :mod:`masters.engine.capacity`, or
    ``curve=``) lies within its 95% interval of 0.
G2 masking bites
    Per mask level r, for the configured masker and for ``random``: teacher accuracy, mean token
    entropy, JSD(T_r, T_0) and JSD(T_r, S) on the validation questions' reference answers. Passes
    at the smallest r (configured masker) whose JSD(T_r, T_0) / JSD(T_0, S) lies in [0.3, 0.5];
    that r is the r_max the probe recommends.
G3 the distillation reward is informative
    Banked-style groups (``n_teacher`` responses of the masked teacher at that r_max, or at the
    schedule's r_max when G2 found none, plus ``n_student`` student responses) on train questions,
    sampled with the run's generation settings. D_j = mean token JSD(T_r, S) of response j.
    Passes when the median within-group span of D_j over its mean is at least 0.1 and no single
    position (first token, answer token, EOS) explains 20% or more of the span on average. Its
    correlation with R_acc is reported.
G4 groups carry a policy signal
    Fewer than 30% of those groups have zero variance of R_acc.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from masters.engine.capacity_report import answer_prior
from masters.errors import MastersError

if TYPE_CHECKING:
    from masters.specs import RunSpec

DEFAULT_LEVELS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
GAP_MIN = 0.15
RATIO_BAND = (0.3, 0.5)
SPAN_MIN = 0.1
POSITION_MAX = 0.2
ZERO_VARIANCE_MAX = 0.3
PLATEAU_FILE = "plateau.json"
PRIOR_MARGIN = 0.02  # a student within this of the answer prior is at it (G1's fix then names the teacher)


@dataclass
class Gate:
    name: str
    title: str
    value: float | None
    threshold: str
    passed: bool
    detail: str = ""
    fix: str = ""


@dataclass
class ProbeReport:
    gates: list[Gate] = field(default_factory=list)
    levels: list[dict[str, Any]] = field(default_factory=list)  # masker, level, accuracy, entropy, jsd_t0, jsd_s, ratio
    groups: list[dict[str, Any]] = field(default_factory=list)  # per group: span, mean, shares, zero variance
    r_max: float | None = None
    teacher_accuracy: float | None = None
    student_accuracy: float | None = None
    jsd_teacher_student: float | None = None
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def gate(self, name: str) -> Gate:
        return next(g for g in self.gates if g.name == name)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "failed": [g.name for g in self.failed]}


# ---------------------------------------------------------------------------------------------
# the probe
# ---------------------------------------------------------------------------------------------


def run_probe(spec: RunSpec, *, min_validation: int = 2000, n_levels: int = 512, n_level_accuracy: int = 256,
              n_groups: int = 64, levels: Sequence[float] = DEFAULT_LEVELS, curve: Mapping[str, Any] | None = None,
              splits: Mapping[str, list[Any]] | None = None, batch_size: int = 64, progress: Any = None,
              say: Any = None) -> ProbeReport:
    """Measure G1-G4 for ``spec`` (its last teacher, student, masker, rewards, generation settings)."""
    import torch

    from masters.adapters.resolve import resolve_adapter
    from masters.data import load_splits
    from masters.engine.generation import check_tokenizers

    say = say or (lambda text: None)
    began = time.perf_counter()
    splits = splits or load_splits(spec.task)
    train, validation = list(splits["train"]), list(splits.get("validation") or [])
    if not validation:
        raise MastersError("the task has no validation split; the probe's gates use train and validation only",
                           where="task.n_validation", fix=f"give the task a validation split of at least {min_validation}")
    reward_spec = _accuracy_reward(spec)
    vocab = check_tokenizers(spec)
    report = ProbeReport(settings={"min_validation": min_validation, "n_levels": n_levels,
                                   "n_level_accuracy": n_level_accuracy, "n_groups": n_groups,
                                   "levels": list(levels), "reward": reward_spec.name,
                                   "validation": len(validation), "train": len(train)})
    teacher_spec = spec.teachers[-1]
    teacher = resolve_adapter(teacher_spec)
    student = resolve_adapter(spec.student)
    teacher.model.eval()
    student.model.eval()
    max_new = spec.generation.max_new_tokens

    # G1 ------------------------------------------------------------------------------------
    say("G1: teacher and student on the validation split")
    gap_set = validation[:max(min_validation, 1)]
    t_acc = _accuracy(teacher, gap_set, reward_spec, batch_size, max_new)
    s_acc = _accuracy(student, gap_set, reward_spec, batch_size, max_new)
    report.teacher_accuracy, report.student_accuracy = t_acc, s_acc
    report.gates.append(_gate_g1(t_acc, s_acc, len(gap_set), min_validation, curve or read_plateau(spec.student.path),
                                 answer_prior(train, gap_set)))

    # G2 ------------------------------------------------------------------------------------
    say("G2: the teacher at each mask level")
    g2_set = validation[:n_levels]
    responses = student.response_ids([s.answer or "" for s in g2_set])
    with torch.no_grad():
        s_logits, mask = _forced(student, g2_set, responses, vocab, batch_size)
        t0_logits, _ = _forced(teacher, g2_set, responses, vocab, batch_size)
    jsd_ts = _mean_jsd(t0_logits, s_logits, mask)
    report.jsd_teacher_student = jsd_ts
    maskers = [spec.masker]
    if spec.masker.name != "random":
        from masters.masking.specs import RandomMaskerSpec

        maskers.append(RandomMaskerSpec())
    acc_set = validation[:n_level_accuracy]
    t0_level_acc = _accuracy(teacher, acc_set, reward_spec, batch_size, max_new)
    for masker in maskers:
        for level, acc, entropy, jsd_t0, jsd_s in _level_rows(teacher, masker, levels, g2_set, responses, acc_set,
                                                               reward_spec, vocab, batch_size, max_new, t0_logits,
                                                               s_logits, mask):
            report.levels.append({"masker": masker.name, "level": level, "accuracy": acc, "entropy": entropy,
                                  "jsd_t0": jsd_t0, "jsd_s": jsd_s, "ratio": jsd_t0 / jsd_ts if jsd_ts > 0 else math.nan})
            say(f"  {masker.name} @ {level:.2f}: accuracy {acc:.3f}, JSD(T_r,T_0)/JSD(T_0,S) {report.levels[-1]['ratio']:.3f}")
    report.levels.insert(0, {"masker": "(unmasked)", "level": 0.0, "accuracy": t0_level_acc,
                             "entropy": _mean_entropy(t0_logits, mask), "jsd_t0": 0.0,
                             "jsd_s": jsd_ts, "ratio": 0.0})
    gate2 = _gate_g2(report, spec.masker.name)
    report.gates.append(gate2)

    # G3, G4 --------------------------------------------------------------------------------
    r_groups = report.r_max if report.r_max is not None else _schedule_r_max(spec)
    say(f"G3/G4: {n_groups} groups at level {r_groups:.2f}")
    report.groups = _groups(spec, teacher, student, train[:n_groups], r_groups, reward_spec, vocab, batch_size)
    report.settings["group_level"] = r_groups
    report.gates.extend(_gate_g3_g4(report.groups, student))
    del teacher, student
    report.seconds = time.perf_counter() - began
    return report


def read_plateau(student_dir: str | Path) -> dict[str, Any] | None:
    path = Path(student_dir) / PLATEAU_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _accuracy_reward(spec: RunSpec) -> Any:
    for r in spec.rewards:
        if type(r).signal == "accuracy" and r.name != "trace_faithfulness":
            return r
    raise MastersError("the config has no accuracy reward to measure accuracy with", where="rewards",
                       fix="list one (final_answer for shapes_reason, exact_match for shapes)")


def _schedule_r_max(spec: RunSpec) -> float:
    from masters.schedules.chain import TeacherChain

    levels = TeacherChain.from_run_spec(spec).levels(len(spec.teachers) - 1)
    return float(max(levels))


def _accuracy(adapter: Any, samples: Sequence[Any], reward_spec: Any, batch_size: int, max_new: int) -> float:
    from masters.interfaces import ScoredResponse

    texts: list[str] = []
    for start in range(0, len(samples), batch_size):
        chunk = list(samples[start:start + batch_size])
        texts.extend(adapter.decode(adapter.generate(chunk, max_new_tokens=max_new, temperature=0.0)))
    items = [ScoredResponse(question=s.question, response=t, reference=s.answer or "", choices=s.choices,
                            metadata=dict(s.metadata)) for s, t in zip(samples, texts)]
    values = [v for v in reward_spec.build().score(items) if v is not None]
    return sum(values) / len(values) if values else 0.0


def _forced(adapter: Any, samples: Sequence[Any], responses: Sequence[Sequence[int]], vocab: int, batch_size: int):
    """Teacher-forced logits ``[N, T, V]`` (T the longest response) and mask ``[N, T]``, on CPU."""
    import torch

    length = max(len(r) for r in responses)
    logits = mask = None
    for start in range(0, len(samples), batch_size):
        forced = adapter.teacher_force(list(samples[start:start + batch_size]), list(responses[start:start + batch_size]),
                                       vocab_limit=vocab)
        chunk_logits = forced.logits.float().cpu()
        if logits is None:
            logits = torch.zeros(len(samples), length, chunk_logits.shape[-1])
            mask = torch.zeros(len(samples), length, dtype=torch.bool)
        n, t = chunk_logits.shape[:2]
        logits[start:start + n, :t] = chunk_logits
        mask[start:start + n, :t] = forced.mask.cpu()
    return logits, mask


def _token_jsd(a, b, mask):
    from masters.rewards.jsd import token_jsd

    return token_jsd(a, b, mask=mask)


def _mean_jsd(a, b, mask) -> float:
    values = _token_jsd(a, b, mask)
    return float(values[mask].mean())


def _mean_entropy(logits, mask) -> float:
    import torch

    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return float(entropy[mask].mean())


def _level_rows(teacher: Any, masker: Any, levels: Sequence[float], samples, responses, acc_set, reward_spec, vocab,
                batch_size, max_new, t0_logits, s_logits, mask):
    for ratio, tr_logits in forced_levels(teacher, masker, levels, samples, responses, vocab, batch_size):
        acc = _accuracy(teacher, acc_set, reward_spec, batch_size, max_new)
        yield (float(ratio), acc, _mean_entropy(tr_logits, mask), _mean_jsd(tr_logits, t0_logits, mask),
               _mean_jsd(tr_logits, s_logits, mask))


def forced_levels(teacher: Any, masker: Any, levels: Sequence[float], samples, responses, vocab, batch_size):
    """``(level, teacher-forced logits)`` at each level > 0 under ``masker``; the teacher is restored
    (and any hook removed) when the iteration ends, however it ends. The teacher's weights are
    masked in place, so use the logits before asking for the next level."""
    import torch

    from masters.masking.runtime import MaskedTeacher
    from masters.ratios import Ratio

    ratios = sorted({Ratio.parse(float(r)) for r in levels if float(r) > 0} | {Ratio(0)})
    masked = MaskedTeacher.from_model(teacher.model, masker, ratios, maskable=teacher.maskable_parameters())
    try:
        for ratio in ratios[1:]:
            masked.set_level(ratio)
            with torch.no_grad():
                logits, _ = _forced(teacher, samples, responses, vocab, batch_size)
            yield ratio, logits
    finally:
        masked.close()


def _gate_g1(t_acc: float, s_acc: float, n: int, min_validation: int, curve: Mapping[str, Any] | None,
             prior: float | None = None) -> Gate:
    gap = t_acc - s_acc
    problems, fixes = [], []
    if n < min_validation:
        problems.append(f"only {n} validation questions (wanted >= {min_validation})")
        fixes.append(f"raise task.n_validation to {min_validation}")
    if gap < GAP_MIN:
        problems.append(f"teacher {t_acc:.3f} - student {s_acc:.3f} = {gap:+.3f} < {GAP_MIN}")
        if prior is not None and s_acc <= prior + PRIOR_MARGIN:
            problems.append(f"the student is at the answer prior ({s_acc:.3f}; always answering each question "
                            f"kind's commonest training answer scores {prior:.3f})")
            fixes.append("a smaller student cannot score below the prior: train the teacher longer (GapSpec "
                         "passes; python -m masters.engine.capacity --diagnose teacher shows which kinds it lacks)")
        else:
            fixes.append("shrink the student (hidden 32-48, fewer layers) until its plateau is 0.15 below the teacher"
                         + ("; the teacher itself is near the answer prior: train it longer (more passes, a lower "
                            "learning rate) before shrinking anything" if t_acc < 0.6 else ""))
    plateau = "no plateau curve"
    if curve is None:
        problems.append("no warm-up curve to show the student is at its plateau")
        fixes.append(f"warm the student up with masters.engine.capacity (writes {PLATEAU_FILE} beside it)")
    else:
        gain, se = plateau_gain(curve)
        plateau = f"last-quarter gain {gain:+.3f} (95% interval +/- {1.96 * se:.3f})"
        if abs(gain) > 1.96 * se:
            problems.append(f"the student is not at its plateau: {plateau}")
            fixes.append("warm the student up longer (more passes) before distilling")
    return Gate("G1", "capacity gap", gap, f">= {GAP_MIN}, plateau gain in its 95% interval of 0", not problems,
                f"teacher {t_acc:.3f}, student {s_acc:.3f} on {n} validation questions; {plateau}"
                + ("; " + "; ".join(problems) if problems else ""), "; ".join(fixes))


def plateau_gain(curve: Mapping[str, Any]) -> tuple[float, float]:
    """Gain of accuracy from 3/4 of the warm-up to its end, and its standard error (two binomials)."""
    steps = list(curve["steps"])
    acc = list(curve["accuracy"])
    n = int(curve["n"])
    if len(steps) < 2:
        raise MastersError("a plateau curve needs at least two points", where=PLATEAU_FILE,
                           fix="evaluate the student at several steps of its warm-up")
    target = steps[-1] * 0.75
    i = min(range(len(steps)), key=lambda k: abs(steps[k] - target))
    a, b = acc[i], acc[-1]
    se = math.sqrt(max(a * (1 - a), 1e-12) / n + max(b * (1 - b), 1e-12) / n)
    return b - a, se


def _gate_g2(report: ProbeReport, masker: str) -> Gate:
    rows = [r for r in report.levels if r["masker"] == masker]
    lo, hi = RATIO_BAND
    inside = [r for r in rows if lo <= r["ratio"] <= hi]
    ratios = ", ".join(f"{r['level']:.2f}: {r['ratio']:.3f}" for r in rows)
    if inside:
        best = min(inside, key=lambda r: r["level"])
        report.r_max = best["level"]
        return Gate("G2", "masking bites", best["ratio"], f"JSD(T_r,T_0)/JSD(T_0,S) in [{lo}, {hi}]", True,
                    f"r_max = {best['level']:.2f} ({masker}); ratios {ratios}")
    top = max((r["ratio"] for r in rows), default=math.nan)
    if not rows or top < lo:
        fix = (f"raise r_max: the largest level probed ({max((r['level'] for r in rows), default=0):.2f}) moves the "
               f"teacher only {top:.3f} of its distance to the student; probe higher levels (--levels), or shrink "
               "the student only if the gap is what is missing")
    else:
        fix = "probe a finer grid of levels (--levels): the ratio jumps over the band between two levels"
    return Gate("G2", "masking bites", top, f"JSD(T_r,T_0)/JSD(T_0,S) in [{lo}, {hi}] at some level", False,
                f"{masker}: ratios {ratios}", fix)


def _groups(spec: RunSpec, teacher: Any, student: Any, questions: Sequence[Any], level: float, reward_spec: Any,
            vocab: int, batch_size: int) -> list[dict[str, Any]]:
    import torch

    from masters.backends.hf import HFSession
    from masters.engine.generation import sampling_settings
    from masters.engine.identity import derived_seed
    from masters.interfaces import ScoredResponse
    from masters.masking.runtime import MaskedTeacher
    from masters.ratios import Ratio
    from masters.rewards.jsd import sequence_mean

    settings = sampling_settings(spec)
    n_t, n_s = spec.training.n_teacher, spec.training.n_student
    ratio = Ratio.parse(float(level))
    masked = MaskedTeacher.from_model(teacher.model, spec.masker, sorted({ratio, Ratio(0)}),
                                      maskable=teacher.maskable_parameters())
    rows: list[tuple[int, Any, list[int]]] = []  # (group, sample, response)
    try:
        masked.set_level(ratio)
        t_session = HFSession(teacher, vocab_limit=vocab)
        s_session = HFSession(student, vocab_limit=vocab)
        for session, n, source in ((t_session, n_t, "teacher"), (s_session, n_s, "student")):
            if not n:
                continue
            for start in range(0, len(questions), max(1, batch_size // n)):
                chunk = list(questions[start:start + max(1, batch_size // n)])
                batch = [q for q in chunk for _ in range(n)]
                seeds = [derived_seed("probe", spec.generation.seed, source, q.id, k) for q in chunk for k in range(n)]
                for i, g in enumerate(session.generate(batch, seeds, settings)):
                    rows.append((start + i // n, batch[i], list(g.token_ids) or list(student.eos_token_ids[:1])))
        samples = [r[1] for r in rows]
        responses = [r[2] for r in rows]
        with torch.no_grad():
            t_logits, mask = _forced(teacher, samples, responses, vocab, batch_size)
    finally:
        masked.close()
    with torch.no_grad():
        s_logits, _ = _forced(student, samples, responses, vocab, batch_size)
    token = _token_jsd(t_logits, s_logits, mask)
    d = sequence_mean(token, mask)
    texts = student.decode(responses)
    items = [ScoredResponse(question=s.question, response=t, reference=s.answer or "", choices=s.choices,
                            metadata=dict(s.metadata)) for s, t in zip(samples, texts)]
    acc = [float(v or 0.0) for v in reward_spec.build().score(items)]
    answer_positions = [_answer_position(student, r) for r in responses]
    eos = set(student.eos_token_ids)
    out = []
    for g in sorted({r[0] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r[0] == g]
        values = [float(d[i]) for i in idx]
        mean = statistics.fmean(values)
        hi, lo = idx[max(range(len(idx)), key=lambda k: values[k])], idx[min(range(len(idx)), key=lambda k: values[k])]
        span = float(d[hi] - d[lo])
        shares = {}
        for name in ("first", "answer", "eos"):
            contribution = 0.0
            for j, sign in ((hi, 1.0), (lo, -1.0)):
                n_tok = int(mask[j].sum())
                pos = {"first": 0, "answer": answer_positions[j],
                       "eos": n_tok - 1 if responses[j] and responses[j][-1] in eos else None}[name]
                if pos is not None and n_tok:
                    contribution += sign * float(token[j, pos]) / n_tok
            shares[name] = abs(contribution) / span if span > 0 else math.nan
        rewards = [acc[i] for i in idx]
        out.append({"group": g, "question": questions[g].id, "span": span, "mean": mean,
                    "relative_span": span / mean if mean > 0 else 0.0, "shares": shares, "d": values,
                    "accuracy": rewards, "zero_variance": len(set(rewards)) <= 1})
    return out


def _answer_position(adapter: Any, response: Sequence[int]) -> int:
    """Index of the answer token: the token after ``answer :`` when the response has one, else the
    last token before EOS (a one-word answer: its only word)."""
    vocab = adapter.vocab()
    a, colon = vocab.get("answer"), vocab.get(":")
    for i in range(len(response) - 2, -1, -1):
        if response[i] == a and i + 1 < len(response) and response[i + 1] == colon and i + 2 < len(response):
            return i + 2
    eos = set(adapter.eos_token_ids)
    last = len(response) - 1
    if last > 0 and response[last] in eos:
        last -= 1
    return max(last, 0)


def _correlation(groups: Sequence[Mapping[str, Any]]) -> float:
    """Pearson correlation of D_j with R_acc after centring both within each group (pooled)."""
    xs, ys = [], []
    for g in groups:
        md, ma = statistics.fmean(g["d"]), statistics.fmean(g["accuracy"])
        xs.extend(v - md for v in g["d"])
        ys.extend(v - ma for v in g["accuracy"])
    sx = math.sqrt(sum(x * x for x in xs))
    sy = math.sqrt(sum(y * y for y in ys))
    return sum(x * y for x, y in zip(xs, ys)) / (sx * sy) if sx > 0 and sy > 0 else math.nan


def _gate_g3_g4(groups: Sequence[Mapping[str, Any]], student: Any) -> list[Gate]:
    rel = statistics.median(g["relative_span"] for g in groups) if groups else 0.0
    shares = {}
    for name in ("first", "answer", "eos"):
        vals = [g["shares"][name] for g in groups if not math.isnan(g["shares"][name])]
        shares[name] = statistics.fmean(vals) if vals else math.nan
    worst = max(shares, key=lambda k: -1 if math.isnan(shares[k]) else shares[k])
    corr = _correlation(groups)
    problems, fixes = [], []
    if rel < SPAN_MIN:
        problems.append(f"median span / mean of D_j {rel:.3f} < {SPAN_MIN}")
        fixes.append("use a task whose responses differ at many tokens (longer answers, several trace templates)")
    if not shares[worst] < POSITION_MAX:
        problems.append(f"the {worst} token explains {shares[worst]:.0%} of the span (>= {POSITION_MAX:.0%})")
        fixes.append("the reward only ranks one position: lengthen the responses (a trace before the answer)")
    detail = (f"median span/mean {rel:.3f}; shares of the span: "
              + ", ".join(f"{k} {v:.0%}" if not math.isnan(v) else f"{k} n/a" for k, v in shares.items())
              + f"; correlation with R_acc {corr:+.3f}; {len(groups)} groups")
    g3 = Gate("G3", "R_distill informative", rel, f"span/mean >= {SPAN_MIN}, any one position < {POSITION_MAX:.0%}",
              not problems, detail + ("; " + "; ".join(problems) if problems else ""), "; ".join(fixes))
    zero = sum(g["zero_variance"] for g in groups) / len(groups) if groups else 1.0
    g4 = Gate("G4", "groups carry a signal", zero, f"< {ZERO_VARIANCE_MAX:.0%} of groups with zero R_acc variance",
              zero < ZERO_VARIANCE_MAX, f"{zero:.0%} of {len(groups)} groups have every R_acc equal",
              "" if zero < ZERO_VARIANCE_MAX else "widen the gap between teacher and student responses (shrink the "
              "student) or raise the group size; groups of all-right or all-wrong answers carry no policy signal")
    return [g3, g4]


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def render_tables(report: ProbeReport) -> list[Any]:
    from rich.table import Table

    gates = Table(title="calibration gates (train and validation splits only)", title_justify="left")
    for col in ("gate", "what", "value", "wanted", "result", "detail"):
        gates.add_column(col, overflow="fold", justify="right" if col == "value" else "left")
    for g in report.gates:
        value = "n/a" if g.value is None or (isinstance(g.value, float) and math.isnan(g.value)) else f"{g.value:.3f}"
        gates.add_row(g.name, g.title, value, g.threshold, "[green]pass[/]" if g.passed else "[red]FAIL[/]", g.detail)
    levels = Table(title=f"teacher at each mask level (JSD(T_0,S) = {report.jsd_teacher_student or 0:.4f})",
                   title_justify="left")
    for col in ("masker", "r", "accuracy", "entropy", "JSD(T_r,T_0)", "JSD(T_r,S)", "ratio"):
        levels.add_column(col, justify="left" if col == "masker" else "right")
    for r in report.levels:
        levels.add_row(r["masker"], f"{r['level']:.2f}", f"{r['accuracy']:.3f}", f"{r['entropy']:.3f}",
                       f"{r['jsd_t0']:.4f}", f"{r['jsd_s']:.4f}", f"{r['ratio']:.3f}")
    return [gates, levels]


def plot_report(report: ProbeReport, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    maskers = [m for m in dict.fromkeys(r["masker"] for r in report.levels) if m != "(unmasked)"]
    unmasked = next((r for r in report.levels if r["masker"] == "(unmasked)"), None)
    for m in maskers:
        rows = ([unmasked] if unmasked else []) + [r for r in report.levels if r["masker"] == m]
        axes[0].plot([r["level"] for r in rows], [r["accuracy"] for r in rows], "o-", label=f"teacher ({m})")
        axes[1].plot([r["level"] for r in rows], [r["ratio"] for r in rows], "o-", label=m)
    if report.student_accuracy is not None:
        axes[0].axhline(report.student_accuracy, color="grey", ls="--", label="student")
    axes[0].set_xlabel("mask ratio r")
    axes[0].set_ylabel("validation accuracy")
    axes[0].set_title("G1/G2: accuracy")
    axes[0].legend(fontsize=7)
    axes[1].axhspan(*RATIO_BAND, color="tab:green", alpha=0.15)
    if report.r_max is not None:
        axes[1].axvline(report.r_max, color="tab:green", ls=":", label=f"r_max {report.r_max:.2f}")
    axes[1].set_xlabel("mask ratio r")
    axes[1].set_title("G2: JSD(T_r,T_0) / JSD(T_0,S)")
    axes[1].legend(fontsize=7)
    axes[2].hist([g["relative_span"] for g in report.groups], bins=20, color="tab:blue")
    axes[2].axvline(SPAN_MIN, color="tab:red", ls="--", label=f"gate {SPAN_MIN}")
    axes[2].set_xlabel("within-group span of D_j / mean D_j")
    axes[2].set_title("G3: distillation reward spread")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    from masters.files import atomic_path

    try:
        with atomic_path(path) as tmp:  # decision 18: the PNG appears whole or not at all
            fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def failure(report: ProbeReport) -> MastersError | None:
    """The error ``masters probe`` exits with: every failing gate, its value and its fix."""
    failed = report.failed
    if not failed:
        return None
    parts = []
    for g in failed:
        value = "n/a" if g.value is None or (isinstance(g.value, float) and math.isnan(g.value)) else f"{g.value:.3f}"
        parts.append(f"{g.name} ({g.title}) failed: value {value}, wanted {g.threshold}")
    return MastersError("; ".join(parts), where="masters probe",
                        fix=" | ".join(f"{g.name}: {g.fix}" for g in failed if g.fix))
