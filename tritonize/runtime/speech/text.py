"""English text normalisation and sentence splitting for the speech front end (plain Python)."""

from __future__ import annotations

import re

from tritonize.runtime.speech.currency import spell_currency

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "prof": "professor", "st": "saint", "jr": "junior",
    "sr": "senior", "vs": "versus", "etc": "et cetera", "e.g": "for example", "i.e": "that is", "approx": "approximately",
}
SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "=": " equals ", "@": " at ", "#": " number "}


def number_words(n: int) -> str:
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, word in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_words(head)} {word}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    words[-1] = _ORDINAL.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join(words)


def _number(match: re.Match) -> str:
    text = match.group(0).replace(",", "")
    if re.fullmatch(r"\d+(st|nd|rd|th)", text):
        return " " + ordinal_words(int(text[:-2])) + " "
    whole, _, frac = text.partition(".")
    words = number_words(int(whole)) if len(whole) <= 15 else " ".join(_ONES[int(d)] for d in whole)
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return f" {words} "


def normalize_english(text: str) -> str:
    """Numbers, currency (see currency.py), ordinals, abbreviations and symbols spelled out; quotes and
    dashes simplified."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"[\u2013\u2014]", ", ", text)
    text = re.sub(r"\b(" + "|".join(re.escape(a) for a in ABBREVIATIONS) + r")\.", lambda m: ABBREVIATIONS[m.group(1).lower()],
                  text, flags=re.IGNORECASE)
    text = spell_currency(text, number_words)
    text = re.sub(r"(?:\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(st|nd|rd|th)?", _number, text)
    for sym, word in SYMBOLS.items():
        text = text.replace(sym, word)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)  # "five dollars ," -> "five dollars,"
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(text: str, max_chars: int) -> list[str]:
    """Sentences at . ! ? ; longer ones cut at commas, then at spaces, so none exceeds max_chars."""
    out = []
    for sentence in re.split(r"(?<=[.!?;])\s+|\n+", text):
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            cut = sentence.rfind(",", 0, max_chars)
            cut = cut if cut > max_chars // 3 else sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(sentence[: cut + 1].strip())
            sentence = sentence[cut + 1 :].strip()
        if sentence:
            out.append(sentence)
    return out
