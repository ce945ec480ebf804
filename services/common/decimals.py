"""Decimal helpers. Money is never a float: strings on the wire, Decimal here."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation

SIGNIFICANT = Context(prec=12)
MAX_CANONICAL_EXPONENT = 40


def parse_decimal(raw: object) -> Decimal | None:
    """A finite Decimal from a decimal string or an int; None if it is not one.

    Floats are refused on purpose: a JSON number reaches us as a string
    (the gateway parses JSON numbers straight to Decimal), never as a float.
    """
    if isinstance(raw, bool | float):
        return None
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if not text or len(text) > 64:
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            return None
    else:
        return None
    if not value.is_finite():
        return None
    # One spelling per number from here on ("1e1", "10.0" and "10" are all 10), so every view of
    # the order shows the same string; absurd exponents are left for range checks to refuse.
    return Decimal(fmt(value)) if abs(value.adjusted()) <= MAX_CANONICAL_EXPONENT else value


def fmt(value: Decimal | int | None) -> str:
    """Plain decimal string without exponent or trailing zeros ("" for None)."""
    if value is None:
        return ""
    dec = Decimal(value)
    if dec == dec.to_integral_value():
        # Not quantize(1): past the context's 28 digits it raises (1.1e+28 is a whole number too).
        return format(dec.to_integral_value(), "f")
    return format(dec.normalize(), "f")


def ratio(value: Decimal) -> str:
    """A price, rate or fraction on the wire: 12 significant digits, plain notation."""
    return fmt(SIGNIFICANT.plus(value))
