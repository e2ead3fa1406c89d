"""NHS numbers for tests: the Modulus 11 check digit, written once, independently of the
pipeline's and the generator's code (NHS Data Dictionary, "NHS Number"): weights 10..2 on the
first nine digits, check = 11 - (sum mod 11), 11 -> 0, and 10 means no such NHS number.
The nhs-number package also rejects numbers in the Scottish CHI range (010 101 0000 to
311 299 9999) whose first six digits are not a DDMMYY date; the generator's 999 range is
outside it.
"""

from __future__ import annotations

import nhs_number
import polars as pl
from hypothesis import assume
from hypothesis import strategies as st

WEIGHTS = tuple(range(10, 1, -1))


def check_digit(stem: str) -> int | None:
    """The check digit of a nine-digit stem, or None when it would be 10 (not a number)."""
    c = (11 - sum(int(d) * w for d, w in zip(stem, WEIGHTS, strict=True)) % 11) % 11
    return None if c == 10 else c


def nhs_ok(col: str) -> pl.Expr:
    """True where the column holds a 10-digit NHS number with a valid check digit (null -> null)."""
    c = pl.col(col)
    digits = [c.str.slice(i, 1).cast(pl.Int64, strict=False) for i in range(10)]
    check = (11 - sum(d * w for d, w in zip(digits[:9], WEIGHTS, strict=True)) % 11) % 11
    return c.str.contains(r"^\d{10}$") & (check != 10) & (check == digits[9])


@st.composite
def nhs_numbers(draw) -> str:
    """Any valid NHS number (as accepted by the nhs-number package, too)."""
    stem = f"{draw(st.integers(0, 10**9 - 1)):09d}"
    check = check_digit(stem)
    assume(check is not None)
    value = f"{stem}{check}"
    assume(nhs_number.is_valid(value))
    return value
