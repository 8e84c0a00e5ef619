"""Amounts of money read as people say them (runtime/speech/currency.py), through the front end's
normalisation."""

import pytest

from tritonize.runtime.speech.text import normalize_english

pytestmark = pytest.mark.unit  # the fast tier: no server, no conversion


@pytest.mark.parametrize("text, spoken", [
    ("$3.50", "three dollars and fifty cents"),
    ("$1", "one dollar"),
    ("$1.00", "one dollar"),
    ("$0.99", "ninety nine cents"),
    ("$0.01", "one cent"),
    ("$3.5", "three dollars and fifty cents"),  # one decimal is tens of cents
    ("$2.01", "two dollars and one cent"),
    ("€2.05", "two euros and five cents"),
    ("€1", "one euro"),
    ("£10", "ten pounds"),
    ("£1.50", "one pound and fifty pence"),
    ("£0.01", "one penny"),
    ("¥100", "one hundred yen"),
    ("₹5", "five rupees"),
    ("5€", "five euros"),
    ("$1,250,000", "one million two hundred fifty thousand dollars"),
    ("$3.5 million", "three point five million dollars"),
    ("$2 billion", "two billion dollars"),
    ("$0.125", "zero point one two five dollars"),  # three decimals are not cents
])
def test_amounts_are_read_as_people_say_them(text, spoken):
    assert normalize_english(text) == spoken


def test_amounts_inside_sentences_keep_their_punctuation():
    assert normalize_english("I paid $5, then $3.50. Cheap!") == "I paid five dollars, then three dollars and fifty cents. Cheap!"
    assert normalize_english("Tickets: £12 each, or €20 for two.") == (
        "Tickets: twelve pounds each, or twenty euros for two.")


def test_plain_numbers_are_not_money():
    assert normalize_english("3.50 metres") == "three point five zero metres"
    assert normalize_english("room 12, floor 3") == "room twelve, floor three"


def test_very_long_amounts_are_read_digit_by_digit_not_a_crash():
    spoken = normalize_english("$" + "9" * 5000)  # int() of 5,000 digits would raise
    assert spoken.startswith("nine nine nine") and spoken.endswith("dollars")
