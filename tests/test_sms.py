"""SMS text: kept to the GSM-7 alphabet, and its segment count."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples

from reminders.core.sms import CODEC, segments, septets, to_gsm7

EXTENSION = "€[]{}^~|\\"


# --- to_gsm7 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u2018Don\u2019t eat\u2019", "'Don't eat'"),
        ("\u201cmidnight\u201d", '"midnight"'),
        ("9am \u2013 10am \u2014 or later", "9am - 10am - or later"),
        ("see you soon\u2026", "see you soon..."),
        ("9\u00a0am", "9 am"),  # no-break space
        ("10\u202fDecember", "10 December"),  # narrow no-break space
        ("a\u200bb", "ab"),  # zero-width space
    ],
)
def test_to_gsm7_replaces_typography(text: str, expected: str) -> None:
    assert to_gsm7(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Si\u00e2n", "Sian"),  # â is not GSM-7: the accent goes
        ("Zo\u00eb", "Zoe"),  # ë is not GSM-7
        ("Jos\u00e9", "Jos\u00e9"),  # é is GSM-7: kept
        ("\u00c5se M\u00fcller", "\u00c5se M\u00fcller"),  # Å and ü are GSM-7: kept
        # ç is not GSM-7 (only Ç is); transliterated to c rather than shouted as Ç.
        ("Fran\u00e7ois", "Francois"),
    ],
)
def test_to_gsm7_simplifies_names(text: str, expected: str) -> None:
    assert to_gsm7(text) == expected


def test_to_gsm7_simplifies_decomposed_accents_too() -> None:
    # Names typed in decomposed form (a letter, then a combining accent), as macOS and some web
    # forms send them, are simplified like their composed spelling, not given a '?'.
    assert to_gsm7("Sia\u0302n") == "Sian"
    assert to_gsm7("Zoe\u0308") == "Zoe"
    assert to_gsm7("Jose\u0301") == "Jos\u00e9"


def test_to_gsm7_c_cedilla_is_transliterated_not_mapped() -> None:
    assert to_gsm7("\u00e7") == "c"
    assert to_gsm7("\u00c7") == "\u00c7"  # Ç is in the alphabet


@pytest.mark.parametrize("text", ["\U0001f600", "\U0001f44d\U0001f3fd", "\u2764\ufe0f", "\u4f60"])
def test_to_gsm7_writes_what_cannot_be_written_as_question_marks(text: str) -> None:
    result = to_gsm7(text)
    assert set(result) == {"?"}, f"{text!r} -> {result!r}"


def test_to_gsm7_keeps_plain_text_and_extension_characters() -> None:
    text = "Hello Sian, see you at 9:30am. Reply STOP to opt out. " + EXTENSION + "@$\n"
    assert to_gsm7(text) == text


@settings(max_examples=examples(500))
@given(st.text())
def test_to_gsm7_always_encodes_and_round_trips(text: str) -> None:
    result = to_gsm7(text)
    encoded = result.encode(CODEC)  # must not raise
    assert encoded.decode(CODEC) == result, f"{text!r} -> {result!r} does not round-trip"


@settings(max_examples=examples(200))
@given(st.text(alphabet=st.characters(codec="latin-1")))
def test_to_gsm7_is_idempotent(text: str) -> None:
    once = to_gsm7(text)
    assert to_gsm7(once) == once


# --- segments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_segments_of_plain_text(length: int, expected: int) -> None:
    assert segments("a" * length) == expected, f"{length} plain characters"


@pytest.mark.parametrize("char", list(EXTENSION))
def test_extension_characters_take_two_septets(char: str) -> None:
    assert septets(char) == 2, repr(char)
    assert segments(char * 80) == 1, f"80 x {char!r} is 160 septets"
    assert segments(char * 81) == 2, f"81 x {char!r} is 162 septets"


def test_an_escape_pair_is_never_split_across_segments() -> None:
    # 152 plain characters, then a euro sign (2 septets) that does not fit in the first
    # segment's last septet, then 152 more: 306 septets, which 153 a segment would squeeze into
    # two. Filled character by character, the first segment carries 152, the second the euro
    # sign and 151, and the last character needs a third.
    text = "a" * 152 + "\u20ac" + "a" * 152
    assert septets(text) == 306
    assert -(-septets(text) // 153) == 2, "the naive division would say 2"
    assert segments(text) == 3


def test_an_escape_pair_that_fits_exactly_stays_in_its_segment() -> None:
    text = "a" * 151 + "\u20ac" + "a" * 153  # 151 + 2 = 153, then 153
    assert septets(text) == 306
    assert segments(text) == 2
