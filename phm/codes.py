"""Code checks in one place: SNOMED CT concept ids (Verhoeff check digit), NHS numbers
(Modulus 11) and ICD-10 codes (the forms SUS sends, and the contract's normal form).

The SNOMED CT checks work on one string (code lists are checked on load, and the generator
mints valid ids); the NHS number and ICD-10 checks are polars expressions, vectorised over a
delivery's columns by the table schemas (:mod:`schemas`).
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import polars as pl

# --------------------------------------------------------------------------------------
# SNOMED CT identifiers
# --------------------------------------------------------------------------------------

# Verhoeff tables (dihedral group D5 multiplication, permutation, inverse).
_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)

CONCEPT_PARTITIONS = ("00", "10")
_DIGITS = re.compile(r"^[0-9]+$")


_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def verhoeff_digit(stem: str) -> str:
    """The Verhoeff check digit to append to the digit string ``stem``."""
    c = 0
    for i, ch in enumerate(reversed(stem)):
        c = _D[c][_P[(i + 1) % 8][int(ch)]]
    return str(_INV[c])


def verhoeff_is_valid(number: str) -> bool:
    """True if the last digit of ``number`` is its Verhoeff check digit."""
    if not number or not _DIGITS.match(number):
        return False
    c = 0
    for i, ch in enumerate(reversed(number)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def sctid_problem(code: str) -> str | None:
    """Why ``code`` is not a valid SNOMED CT concept id, or None if it is."""
    if not _DIGITS.match(code):
        return "not_digits"
    if not 6 <= len(code) <= 18:
        return "length"
    if code[0] == "0":
        return "leading_zero"
    if code[-3:-1] not in CONCEPT_PARTITIONS:
        return "partition"
    if not verhoeff_is_valid(code):
        return "check_digit"
    return None


def is_valid_sctid(code: str) -> bool:
    """True if ``code`` is a well-formed SNOMED CT concept id (format, partition, check digit)."""
    return sctid_problem(code) is None


# --------------------------------------------------------------------------------------
# NHS number: Modulus 11, exactly as nhs_number.is_valid
# --------------------------------------------------------------------------------------


@cache
def _nhs_tables() -> tuple[pl.Series, pl.Series, pl.Series]:
    """Lookup tables that make the Modulus 11 check a few gathers instead of 20 divisions.

    ``HI[v]`` = weighted sum of digits 1-4 (weights 10..7) for v = 0..9999; ``LO[v]`` the
    same for digits 5-9 (weights 6..2) for v = 0..99999; ``CHI_OK[v]`` for the first six
    digits v: False only when the number is in the Scottish CHI range (0100000000 to
    3112999999) and the digits are not a real DDMMYY date, which ``nhs_number.is_valid``
    rejects too (two-digit years as ``strptime('%y')``: 69-99 -> 19xx, 00-68 -> 20xx).
    """

    def weighted(n_digits: int, weights: list[int]) -> np.ndarray:
        v = np.arange(10**n_digits, dtype=np.int64)
        total = np.zeros_like(v)
        for i, w in enumerate(weights):
            total += ((v // 10 ** (n_digits - 1 - i)) % 10) * w
        return total

    hi = weighted(4, [10, 9, 8, 7])
    lo = weighted(5, [6, 5, 4, 3, 2])

    v = np.arange(1_000_000, dtype=np.int64)
    dd, mm, yy = v // 10_000, (v // 100) % 100, v % 100
    year = np.where(yy < 69, 2000 + yy, 1900 + yy)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    dim = np.where((mm == 2) & leap, 29, month_days[np.clip(mm, 0, 12)])
    real_date = (mm >= 1) & (mm <= 12) & (dd >= 1) & (dd <= dim)
    in_chi = (v >= 10_000) & (v <= 311_299)
    chi_ok = ~in_chi | real_date
    return (
        pl.Series("hi", hi.astype(np.int32)),
        pl.Series("lo", lo.astype(np.int32)),
        pl.Series("chi", chi_ok),
    )


def nhs_number_format(text: pl.Expr) -> pl.Expr:
    """Exactly 10 ASCII digits (same as the regex ``^[0-9]{10}$``, but cheaper: 10 bytes that
    parse as an unsigned integer and do not start with ``+``)."""
    return (
        (text.str.len_bytes() == 10)
        & text.cast(pl.UInt64, strict=False).is_not_null()
        & ~text.str.starts_with("+")
    )


def nhs_number_mod11_ok(text: pl.Expr) -> pl.Expr:
    """Check digit (and CHI date) test, meaningful only where ``text`` is 10 digits.

    Works on the number itself: digits 1-4, 5-9 and 1-6 by integer division, each looked up
    in a table (``gather``). The modulo keeps every index in range even for malformed text
    (whose result is then ignored), so nothing needs masking.
    """
    hi_t, lo_t, chi_t = _nhs_tables()
    n = text.cast(pl.UInt64, strict=False)
    hi = ((n // 1_000_000) % 10_000).cast(pl.Int32)
    lo = ((n // 10) % 100_000).cast(pl.Int32)
    first6 = ((n // 10_000) % 1_000_000).cast(pl.Int32)
    total = pl.lit(hi_t).gather(hi) + pl.lit(lo_t).gather(lo)
    expected = (11 - total % 11) % 11  # 11 -> 0; 10 never equals a digit
    return (expected == (n % 10).cast(pl.Int32)) & pl.lit(chi_t).gather(first6)


def nhs_number_check_digit(text: pl.Expr) -> pl.Expr:
    """True when ``text`` is a valid NHS number exactly as ``nhs_number.is_valid`` decides for
    a 10-digit string (Modulus 11 check digit; CHI-range numbers must start with a real
    DDMMYY date); False for null or anything but 10 digits. Vectorised.
    """
    return (nhs_number_format(text) & nhs_number_mod11_ok(text)).fill_null(False)


# --------------------------------------------------------------------------------------
# ICD-10
# --------------------------------------------------------------------------------------

#: ICD-10 as SUS sends it: A00, A000, A00.0, A00X, A00.X, an optional 5th digit, one mark
ICD10_CODE = r"[A-Z][0-9]{2}(?:\.?[0-9X][0-9]?)?[-*+!†]?"
#: the same, anchored, with groups (category, 4th character) for normalising
ICD10_PATTERN = r"^([A-Z][0-9]{2})(?:\.?([0-9X])[0-9]?)?[-*+!†]?$"


def icd10_is_valid(code: pl.Expr) -> pl.Expr:
    """True when ``code`` (already trimmed and upper-cased) is ICD-10 in a delivered form."""
    return code.str.contains(ICD10_PATTERN)


def normalise_icd10(code: pl.Expr) -> pl.Expr:
    """ICD-10 code in any delivered form -> the contract's form; null if not an ICD-10 code.

    Trimmed and upper-cased; dot, dagger/asterisk and filler marks (``* † + ! -``) and a 5th
    character are dropped; a filler ``X`` in 4th place is dropped, so 3-character categories
    stay 3 characters: ``I500``, ``I50.0`` -> ``I500``; ``I50X``, ``I50`` -> ``I50``;
    ``F00.0*`` -> ``F000``; ``E119-`` -> ``E119``.
    """
    c = code.str.strip_chars().str.to_uppercase()
    norm = c.str.replace(ICD10_PATTERN, "${1}${2}").str.strip_suffix("X")
    return pl.when(icd10_is_valid(c)).then(norm).otherwise(None)
