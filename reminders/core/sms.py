"""SMS text in the GSM-7 alphabet, and its segment count.

A single character outside GSM-7 (a curly apostrophe pasted from a word processor, the â in Siân)
switches the whole message to UCS-2: 70 characters a segment instead of 160, so the same text costs
two or three times as much and may be split on an old phone. So text is made GSM-7 before sending.
"""

from __future__ import annotations

import unicodedata
from functools import cache

import gsm0338  # noqa: F401  (registers the 'gsm03.38' codec)

CODEC = "gsm03.38"
MAX_SEGMENTS = 3
_SINGLE = 160  # septets in a message that fits one segment
_PART = 153  # septets per segment once split: 7 go to the concatenation header

# Typography that word processors and phones insert, replaced by its plain GSM-7 look-alike.
_REPLACEMENTS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u2026": "...", "\u2022": "-", "\u00b7": "-",
    # No-break and thin spaces look like spaces but would force UCS-2.
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2007": " ", "\u200b": "",
}  # fmt: skip


@cache
def _encodable(char: str) -> bool:
    try:
        # Only a faithful round trip counts as GSM-7: a codec that mapped a character onto a
        # look-alike (some map ç onto Ç) would change what the patient reads.
        return char.encode(CODEC).decode(CODEC) == char
    except UnicodeError:
        return False


def to_gsm7(text: str) -> str:
    """`text` with every character in GSM-7: typography replaced, accents the alphabet lacks
    dropped (Siân -> Sian), and anything else that cannot be written as '?'."""
    # Composed first: a name typed as "a" + combining circumflex is one letter to simplify.
    text = unicodedata.normalize("NFC", text)
    if _PLAIN.issuperset(text):
        return text
    return "".join(map(_gsm7_char, text))


# Cached by character, as `_encodable` is: the alphabet is small, and a CSV import converts a
# million messages of a few hundred characters each.
@cache
def _gsm7_char(char: str) -> str:
    char = _REPLACEMENTS.get(char, char)
    if all(_encodable(c) for c in char):
        return char
    plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    return plain if plain and all(_encodable(c) for c in plain) else "?"


# The ASCII characters that GSM-7 carries as they are: most messages are nothing else.
_PLAIN = frozenset(c for c in map(chr, range(128)) if _gsm7_char(c) == c)


def septets(text: str) -> int:
    """Length in GSM-7 septets: characters of the extension table (such as € [ ]) take two."""
    if _PLAIN.issuperset(text):  # counted in C, not character by character
        return len(text) + sum(text.count(char) for char in _PLAIN_ESCAPED)
    return sum(map(_septets, text))


@cache
def _septets(char: str) -> int:
    return len(char.encode(CODEC))


# The ASCII that GSM-7 sends escaped, as two septets: [ ] { } ^ ~ | and the backslash.
_PLAIN_ESCAPED = frozenset(char for char in _PLAIN if _septets(char) == 2)


def segments(text: str) -> int:
    """How many SMS segments `text` (already GSM-7) takes.

    An extension character's escape and its character must travel in the same segment, so
    segments are filled character by character rather than by dividing the length.
    """
    length = septets(text)
    if length <= _SINGLE:
        return 1
    if length == len(text):  # no extension characters: every segment is full but the last
        return -(-length // _PART)
    count, used = 1, 0
    for char in text:
        size = _septets(char)
        if used + size > _PART:
            count, used = count + 1, 0
        used += size
    return count
