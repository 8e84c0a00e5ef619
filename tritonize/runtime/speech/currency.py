"""Amounts of money read as people say them: "$3.50" -> "three dollars and fifty cents".

The reading is always "<whole> <unit>[s] and <cents> <subunit>[s]": no "and" part when there are no
cents ("$10.00" -> "ten dollars"), no whole part when there are only cents ("$0.99" -> "ninety nine
cents"). A scale word after the amount keeps its decimals as digits and moves the unit to the end,
as people say it ("$3.5 million" -> "three point five million dollars"). More than two decimals are
not cents ("$0.125" -> "zero point one two five dollars"). The symbol may stand before the amount
(or after it, as in "5€").
"""

from __future__ import annotations

import re
from typing import Callable

# symbol -> (unit, units, subunit, subunits)
CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "sen", "sen"),
    "₹": ("rupee", "rupees", "paisa", "paise"),
}
SCALES = ("thousand", "million", "billion", "trillion")

_SYMBOL = "[" + re.escape("".join(CURRENCIES)) + "]"
_AMOUNT = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"  # "1,000.50"; a comma after the amount stays a pause
_SCALE = r"(?:\s+(" + "|".join(SCALES) + r")\b)?"
PATTERN = re.compile(rf"({_SYMBOL})\s?({_AMOUNT}){_SCALE}|({_AMOUNT})\s?({_SYMBOL})")


MAX_DIGITS = 15  # longer runs of digits are read digit by digit (and int() of them stays cheap)


def _count(n: int, one: str, many: str, words: Callable[[int], str]) -> str:
    return f"{words(n)} {one if n == 1 else many}"


def _digits(digits: str, words: Callable[[int], str]) -> str:
    return " ".join(words(int(d)) for d in digits)


def say_amount(symbol: str, amount: str, scale: str | None, words: Callable[[int], str]) -> str:
    """One amount in words; `words` spells an integer (text.number_words)."""
    unit, units, subunit, subunits = CURRENCIES[symbol]
    whole, _, frac = amount.replace(",", "").partition(".")
    if len(whole) > MAX_DIGITS:
        return f"{_digits(whole, words)}{' point ' + _digits(frac, words) if frac else ''} {units}"
    if scale:  # "$3.5 million": decimals read as digits, the unit comes last
        point = f" point {_digits(frac, words)}" if frac else ""
        return f"{words(int(whole))}{point} {scale} {units}"
    if len(frac) > 2:  # not cents: read like any decimal number
        return f"{words(int(whole))} point {_digits(frac, words)} {units}"
    dollars, cents = int(whole), int(frac.ljust(2, "0")) if frac else 0
    if cents == 0:
        return _count(dollars, unit, units, words)
    if dollars == 0:
        return _count(cents, subunit, subunits, words)
    return f"{_count(dollars, unit, units, words)} and {_count(cents, subunit, subunits, words)}"


def spell_currency(text: str, words: Callable[[int], str]) -> str:
    """Every amount of money in `text` spelled out (spaces around it, collapsed later)."""

    def replace(m: re.Match) -> str:
        if m.group(1):
            return f" {say_amount(m.group(1), m.group(2), m.group(3), words)} "
        return f" {say_amount(m.group(5), m.group(4), None, words)} "

    return PATTERN.sub(replace, text)
