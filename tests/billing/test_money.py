"""Money: decimal strings to integer cents, exactly, and back."""

import pytest
from hypothesis import given, strategies as st

from ppcswitch.money import MAX_CENTS, MoneyError, format_cents, parse_cents
from ppcswitch.storage import validate
from ppcswitch.storage.validate import ValidationError


@pytest.mark.parametrize("text, cents", [
    ("40", 4000), ("40.00", 4000), ("40.0", 4000), ("12.5", 1250), ("12.50", 1250), ("0.01", 1), (".5", 50),
    ("0", 0), ("0.00", 0), (" 7 ", 700), ("+3", 300), ("1000000", MAX_CENTS), ("1000000.00", MAX_CENTS),
    ("0.1", 10), ("0.29", 29), ("19.99", 1999),  # the classic float traps (0.29 * 100 == 28.999...)
    ("000012.34", 1234),
])
def test_parse_cents(text, cents):
    assert parse_cents(text) == cents
    assert isinstance(parse_cents(text), int)


@pytest.mark.parametrize("text, message", [
    ("-1", "negative"), ("-0.01", "negative"), ("1.234", "2 decimal"), ("12.500", "2 decimal"),
    ("NaN", "finite"), ("nan", "finite"), ("Infinity", "finite"), ("-inf", "finite"), ("sNaN", "finite"),
    ("abc", "not a decimal"), ("", "empty"), ("   ", "empty"), ("1e3", "not a decimal"), ("1_000", "not a decimal"),
    ("1,000", "not a decimal"), ("$40", "not a decimal"), ("40 USD", "not a decimal"), ("١٢", "not a decimal"),
    ("1.2.3", "not a decimal"), (".", "not a decimal"), ("1000000.01", "too large"), ("99999999999", "too large"),
    ("1" * 40, "too long"), ("0x10", "not a decimal"),
])
def test_parse_cents_rejects(text, message):
    with pytest.raises(MoneyError, match=message):
        parse_cents(text)


@pytest.mark.parametrize("value", [40, 40.0, None, b"40"])
def test_parse_cents_takes_text_only(value):
    # An int would be ambiguous (dollars or cents?), a float inexact.
    with pytest.raises(MoneyError):
        parse_cents(value)


@pytest.mark.parametrize("cents, text", [(4000, "40.00"), (5, "0.05"), (0, "0.00"), (1250, "12.50"),
                                         (MAX_CENTS, "1000000.00"), (-150, "-1.50")])
def test_format_cents(cents, text):
    assert format_cents(cents) == text


def test_validation_error_names_the_field():
    with pytest.raises(ValidationError) as info:
        validate.money("12.345", "payout")
    assert info.value.field == "payout"
    assert str(info.value) == "payout: has more than 2 decimal places: 12.345"


@given(st.integers(min_value=0, max_value=MAX_CENTS))
def test_cents_round_trip(cents):
    assert parse_cents(format_cents(cents)) == cents


@given(st.decimals(min_value=0, max_value=1_000_000, places=2, allow_nan=False, allow_infinity=False))
def test_decimal_strings_parse_exactly(amount):
    assert parse_cents(str(amount)) == int(amount * 100)
