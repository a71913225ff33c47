"""Rule-based accuracy rewards and the normalisation under them."""

from __future__ import annotations

import pytest

from masters.interfaces import ScoredResponse
from masters.rewards.normalize import (
    canonical_number,
    extract_final_answer,
    extract_numbers,
    normalize_answer,
    words_to_numbers,
)
from masters.config import validate_component


def _score(name, response, reference, choices=None, **fields):
    reward = validate_component("reward", {"name": name, **fields}).build()
    return reward.score([ScoredResponse(question="q", response=response, reference=reference, choices=choices)])[0]


# --- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("three", "3"),
        ("Twenty-one", "21"),
        ("one hundred and five apples", "105 apples"),
        ("a thousand", "1000"),
        ("nine hundred ninety-nine thousand nine hundred ninety nine", "999999"),
        ("one million two hundred thousand", "1200000"),
        ("2.5 million", "2500000"),
        ("one two", "1 2"),  # two numbers, not 3
        ("twenty twenty", "20 20"),
        ("someone alone", "someone alone"),  # no words inside words
        ("zero", "0"),
    ],
)
def test_words_to_numbers(text, expected):
    assert words_to_numbers(text) == expected


@pytest.mark.parametrize(
    "token, expected",
    [("3.50", "3.5"), ("1,000", "1000"), ("+3", "3"), ("-0.0", "0"), (".5", "0.5"), ("100", "100"), ("-2.10", "-2.1")],
)
def test_canonical_number(token, expected):
    assert canonical_number(token) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Cat!", "cat"),
        ("  An   apple. ", "apple"),
        ("A", "a"),  # articles go only when something else remains
        ("the", "the"),
        ("Three red circles.", "3 red circles"),
        ("3.50", "3.5"),
        ("1,000 dollars", "1000 dollars"),
        ("ｔｈｒｅｅ", "3"),  # full-width letters (NFKC)
        ("\u22125", "-5"),  # Unicode minus
        ("x-ray", "x ray"),
        ("New\n\tYork", "new york"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_normalize_answer_options():
    assert normalize_answer("The Cat!", case_sensitive=True) == "Cat"
    assert normalize_answer("the cat!", strip_punctuation=False) == "the cat !"
    assert normalize_answer("three", numbers_as_words=False) == "three"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 3.5.", "3.5"),
        ("blah <answer> B </answer>", "B"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        (r"so \boxed{\frac{1}{2}} ok", r"\frac{1}{2}"),
        ("Answer: (B) because red", "(B)"),
        ("Final answer: 1,000, done", "1,000"),
        ("Reasoning...\nFinal Answer = red circle\nmore", "red circle"),
        ("I cannot answer this", "I cannot answer this"),
        ("  plain  ", "plain"),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_extract_numbers():
    found = extract_numbers("-3.5, 1,234.5 and 50% or 3/4, 1e-3, \u22127, 12kg, three, \\frac{1}{4}")
    assert [n.value for n in found] == [-3.5, 1234.5, 50.0, 0.75, 0.001, -7.0, 12.0, 3.0, 0.25]
    assert [n.percent for n in found][2] is True
    assert extract_numbers("no digits here") == []
    assert [n.value for n in extract_numbers("x-3 and 5/0")] == [3.0, 5.0]


# --- exact match -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, reference, expected",
    [
        ("Red", "red", 1.0),
        ("red.", "Red", 1.0),
        ("The red one", "red one", 1.0),
        ("three", "3", 1.0),
        ("3", "Three", 1.0),
        ("3.0", "3", 1.0),
        ("The answer is: blue.", "blue", 1.0),
        ("<answer>blue</answer>", "blue", 1.0),
        ("blue square", "blue", 0.0),
        ("red", "blue", 0.0),
        ("", "blue", 0.0),
        ("4", "3", 0.0),
        ("  ", "", 1.0),
    ],
)
def test_exact_match(response, reference, expected):
    assert _score("exact_match", response, reference) == expected


def test_exact_match_options():
    assert _score("exact_match", "Red", "red", case_sensitive=True) == 0.0
    assert _score("exact_match", "red!", "red", strip_punctuation=False) == 0.0
    assert _score("exact_match", "three", "3", numbers_as_words=False) == 0.0
    assert _score("exact_match", "The answer is blue", "blue", extract_answer=False) == 0.0


# --- multiple choice -------------------------------------------------------------------------

CHOICES = ("red circle", "blue square", "circle", "green triangle")


@pytest.mark.parametrize(
    "response, expected_b",
    [
        ("B", 1.0),
        ("b", 1.0),
        ("(b)", 1.0),
        ("B.", 1.0),
        ("[B]", 1.0),
        ("B)", 1.0),
        ("B: blue square", 1.0),
        ("B. blue square", 1.0),
        ("Answer: B", 1.0),
        ("The answer is (B).", 1.0),
        ("<answer>B</answer>", 1.0),
        ("option b", 1.0),
        ("I choose choice (B) here", 1.0),
        ("blue square", 1.0),
        ("It is a Blue Square.", 1.0),
        ("C", 0.0),
        ("E", 0.0),  # out of range
        ("circle", 0.0),  # option C's text
        ("Between (A) and (B)", 0.0),  # two letters: no single answer
        ("", 0.0),
        ("I don't know", 0.0),
    ],
)
def test_multiple_choice_reference_letter(response, expected_b):
    assert _score("multiple_choice", response, "B", CHOICES) == expected_b


@pytest.mark.parametrize(
    "response, expected",
    [
        ("A", 1.0),
        ("red circle", 1.0),
        ("The shape is a red circle", 1.0),  # 'circle' inside 'red circle' yields to the longer option
        ("circle", 0.0),
        ("A red circle or a blue square", 0.0),  # two options named
    ],
)
def test_multiple_choice_reference_text(response, expected):
    assert _score("multiple_choice", response, "red circle", CHOICES) == expected


def test_multiple_choice_without_choices_and_with_numeric_options():
    assert _score("multiple_choice", "(C)", "C") == 1.0
    assert _score("multiple_choice", "C", "D") == 0.0
    assert _score("multiple_choice", "3", "3", ("1", "2", "3", "4")) == 1.0
    assert _score("multiple_choice", "C", "3", ("1", "2", "3", "4")) == 1.0
    # a reference that is neither a letter nor an option falls back to normalised text
    assert _score("multiple_choice", "Purple.", "purple", CHOICES) == 1.0


# --- numeric ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, reference, expected",
    [
        ("42", "42", 1.0),
        ("There are 42 apples.", "42", 1.0),
        ("-3.5", "-3.50", 1.0),
        ("1,234", "1234", 1.0),
        ("The total is 1,234.5 dollars", "1234.5", 1.0),
        ("50%", "0.5", 1.0),
        ("0.5", "50%", 1.0),
        ("50%", "50", 1.0),
        ("3/4", "0.75", 1.0),
        ("three", "3", 1.0),
        ("100.5", "100", 1.0),  # within the default 1 % relative tolerance
        ("102", "100", 0.0),
        ("-3", "3", 0.0),
        ("no number", "3", 0.0),
        ("3", "no number", 0.0),
        ("I counted 2, then 3, so 5.", "5", 1.0),  # the last number by default
        ("The answer is 5, not 7.", "5", 1.0),  # a marked answer wins
        (r"\boxed{12}", "12", 1.0),
    ],
)
def test_numeric(response, reference, expected):
    assert _score("numeric", response, reference) == expected


def test_numeric_tolerances_and_position():
    assert _score("numeric", "100.5", "100", rel_tol=0.0) == 0.0
    assert _score("numeric", "100.5", "100", rel_tol=0.0, abs_tol=0.5) == 1.0
    assert _score("numeric", "5 apples out of 7", "5", position="first") == 1.0
    assert _score("numeric", "5 apples out of 7", "5", position="last") == 0.0


# --- regex -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, response, reference, fields, expected",
    [
        (r"^\s*{reference}\s*\.?$", "Blue.", "blue", {}, 1.0),
        (r"^\s*{reference}\s*\.?$", "Blue.", "blue", {"ignore_case": False}, 0.0),
        (r"{reference}", "it is 3.5 cm", "3.5", {}, 1.0),
        (r"{reference}", "it is 3x5 cm", "3.5", {}, 0.0),  # the reference is escaped: '.' is literal
        (r"\d{2} {reference}", "12 apples", "apples", {}, 1.0),  # other braces are left alone
        (r"{reference}", "  red  ", "red", {"full_match": True}, 1.0),
        (r"{reference}", "red car", "red", {"full_match": True}, 0.0),
        (r"\bcat\b", "a cat", "ignored", {}, 1.0),
    ],
)
def test_regex(pattern, response, reference, fields, expected):
    assert _score("regex", response, reference, pattern=pattern, **fields) == expected


def test_regex_spec_rejects_a_bad_pattern():
    from masters.errors import SpecError

    with pytest.raises(SpecError, match="regular expression"):
        validate_component("reward", {"name": "regex", "pattern": "(unclosed"})


def test_rule_modules_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, masters.rewards.rules, masters.rewards.normalize, masters.rewards.combine, "
        "masters.rewards.testing, masters.interfaces; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
