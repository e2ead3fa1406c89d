"""Code helpers for the generator: SNOMED code lists, check digits, NHS numbers, ICD-10 forms.

Code lists are read from the vendored folder ``data/reference/codelists`` (not from a
deployment's ``PHM_CODELIST_DIR``), so a generation is reproducible from the repository.
Ids that fail the SNOMED CT check (Verhoeff check digit, partition ``00``/``10``, 6-18
digits) or that ``INVALID_SCTIDS.csv`` lists are dropped on load: the generator never emits
them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from phm.codelists import is_valid_sctid, verhoeff_digit
from phm.paths import REFERENCE_DIR

CODELIST_ROOT = REFERENCE_DIR / "codelists"
PCD_DIR = CODELIST_ROOT / "pcd-refsets"


def synthetic_sctid(item: int, namespace: str = "9999999") -> str:
    """An SCTID-shaped id in a made-up extension namespace (partition 10), Verhoeff-valid."""
    stem = f"{item}{namespace}10"
    return stem + verhoeff_digit(stem)


# --- code lists --------------------------------------------------------------------------------


@cache
def _invalid_listed() -> frozenset[str]:
    path = CODELIST_ROOT / "INVALID_SCTIDS.csv"
    with open(path, newline="", encoding="utf-8") as f:
        return frozenset(row["code"].strip() for row in csv.DictReader(f))


def codelist_path(spec: str) -> Path:
    """Resolve a ``pcd:``/``oc:``/``gm:`` spec (see params.yaml) to a file."""
    kind, _, name = spec.partition(":")
    if kind == "pcd":
        return PCD_DIR / f"nhsd-primary-care-domain-refsets-{name}.csv"
    if kind == "oc":
        return PCD_DIR / f"{name}.csv"
    if kind == "gm":
        set_name, _, version = name.partition("/")
        folder = CODELIST_ROOT / set_name / version
        files = sorted(folder.glob("*.snomed.txt"))
        if len(files) != 1:
            raise FileNotFoundError(f"code list {spec}: expected one .snomed.txt in {folder}")
        return files[0]
    raise ValueError(f"unknown code list spec {spec!r}")


def _read_codes(path: Path) -> list[str]:
    codes: list[str] = []
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "code" not in reader.fieldnames:
                raise ValueError(f"{path}: no 'code' column")
            codes = [row["code"].strip() for row in reader]
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            first = line.split("\t")[0].strip()
            if first:
                codes.append(first)
    return codes


@cache
def load_codelist(spec: str) -> tuple[str, ...]:
    """Valid, unique SNOMED ids of a code list, sorted (numerically) for determinism."""
    path = codelist_path(spec)
    bad = _invalid_listed()
    seen = {c for c in _read_codes(path) if c not in bad and is_valid_sctid(c)}
    if not seen:
        raise ValueError(f"code list {spec} ({path}) has no valid SNOMED ids")
    return tuple(sorted(seen, key=lambda c: (len(c), c)))


@cache
def load_codelist_terms(spec: str) -> dict[str, str]:
    """code -> first description of a code list (for filtering by wording)."""
    path = codelist_path(spec)
    out: dict[str, str] = {}
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                term_col = "term" if "term" in row else next(k for k in row if k != "code")
                out.setdefault(row["code"].strip(), (row.get(term_col) or "").strip())
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if parts[0].strip():
                out.setdefault(parts[0].strip(), parts[1].strip() if len(parts) > 1 else "")
    return out


@cache
def all_vendored_codes() -> frozenset[str]:
    """Every id in every vendored code list (valid or not): noise codes must avoid them all."""
    out: set[str] = set()
    for path in sorted(CODELIST_ROOT.rglob("*.snomed.txt")):
        out.update(c.split(".")[0] for c in _read_codes(path))
    for path in sorted(PCD_DIR.glob("*.csv")):
        if path.name == "MANIFEST.csv":
            continue
        out.update(_read_codes(path))
    return frozenset(out)


@dataclass(frozen=True)
class WeightedCodes:
    """Codes of one concept with sampling weights: preferred codes first, then a Zipf tail."""

    codes: tuple[str, ...]
    cum: np.ndarray  # cumulative weights, last == 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Indices into ``codes``."""
        return np.searchsorted(self.cum, rng.random(n), side="right").astype(np.int32)


def weighted_codes(
    codes: tuple[str, ...],
    preferred: list[str] | None = None,
    preferred_weights: list[float] | None = None,
    preferred_share: float = 0.75,
    front: set[str] | None = None,
) -> WeightedCodes:
    """Order ``codes``: preferred first, then those in ``front`` (e.g. the eFI overlap), then
    the rest; weights: preferred share the given total, the rest a 1/(rank+2) tail."""
    preferred = [c for c in (preferred or []) if c in set(codes)]
    rest = [c for c in codes if c not in set(preferred)]
    if front:
        rest = [c for c in rest if c in front] + [c for c in rest if c not in front]
    ordered = preferred + rest
    w_rest = 1.0 / (np.arange(len(rest)) + 2.0)
    if preferred:
        if preferred_weights:
            wp = np.asarray(preferred_weights[: len(preferred)], dtype=float)
            share = float(wp.sum())
        else:
            wp = 1.0 / (np.arange(len(preferred)) + 1.0)
            wp = wp / wp.sum() * preferred_share
            share = preferred_share
        w_rest = w_rest / w_rest.sum() * (1.0 - share) if len(rest) else w_rest
        w = np.concatenate([wp, w_rest])
    else:
        w = w_rest
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0
    return WeightedCodes(tuple(ordered), cum)


# --- NHS numbers ------------------------------------------------------------------------------

_NHS_WEIGHTS = np.arange(10, 1, -1)  # weights 10..2 for the first nine digits


def nhs_check_digits(first9: np.ndarray) -> np.ndarray:
    """Modulus 11 check digit for an (n, 9) digit array; 10 means 'invalid number'."""
    total = (first9 * _NHS_WEIGHTS).sum(axis=1)
    check = 11 - (total % 11)
    return np.where(check == 11, 0, check)


#: Valid numbers in the 999 test range: 10**6 stems (999 + 6 digits), less those whose
#: check digit would be 10.
NHS_TEST_STEMS = 1_000_000


def _nhs_from_stems(prefix: int, stems: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    digits = np.empty((len(stems), 9), dtype=np.int64)
    digits[:, 0] = prefix // 100
    digits[:, 1] = (prefix // 10) % 10
    digits[:, 2] = prefix % 10
    rem = stems.astype(np.int64)
    for j in range(8, 2, -1):
        digits[:, j] = rem % 10
        rem //= 10
    check = nhs_check_digits(digits)
    values = prefix * 10_000_000 + stems.astype(np.int64) * 10 + check
    return values, check != 10


def nhs_test_capacity() -> int:
    """How many valid NHS numbers the 999 test range holds (909,091)."""
    _, ok = _nhs_from_stems(999, np.arange(NHS_TEST_STEMS))
    return int(ok.sum())


def generate_nhs_numbers(rng: np.random.Generator, n: int, overflow: bool = False) -> np.ndarray:
    """``n`` unique NHS numbers with a valid Modulus 11 check digit, in random order, from the
    999 test range (``999`` + 6 digits + check digit; stems whose check digit is 10 skipped).

    The test range holds only 909,091 valid numbers. Beyond that this raises, unless
    ``overflow`` is set: then the rest come from the ``998`` prefix and, past its 909,091,
    ``997``, ``996`` and so on, which are NOT reserved test ranges (benchmarks only; never
    share such files). Up to 1,818,182 numbers the draws are those of the ``998``-only rule.
    """
    all999, ok999 = _nhs_from_stems(999, np.arange(NHS_TEST_STEMS))
    valid999 = all999[ok999]
    if n <= len(valid999):
        picked = rng.choice(len(valid999), size=n, replace=False)
        return valid999[picked].astype("U10")
    if not overflow:
        raise ValueError(
            f"{n:,} registrations need more NHS numbers than the 999 test range holds "
            f"({len(valid999):,} valid numbers); generate fewer patients"
        )
    need = n - len(valid999)
    blocks: list[np.ndarray] = []
    for prefix in range(998, 989, -1):  # 998 first; as many more prefixes as needed
        if sum(len(b) for b in blocks) >= need:
            break
        every, ok = _nhs_from_stems(prefix, np.arange(NHS_TEST_STEMS))
        blocks.append(every[ok])
    extra = np.concatenate(blocks)
    if need > len(extra):
        raise ValueError(f"{n:,} NHS numbers requested: more than the overflow ranges hold")
    values = np.concatenate([valid999, extra[rng.choice(len(extra), size=need, replace=False)]])
    return values[rng.permutation(n)].astype("U10")


# --- ICD-10 as SUS sends it -------------------------------------------------------------------


def icd10_messy(canonical: np.ndarray, form: np.ndarray, asterisk: set[str]) -> np.ndarray:
    """See :func:`_icd10_messy_small`; renders each distinct code once (fast for long arrays)."""
    canonical = np.asarray(canonical, dtype="U4")
    uniq, inv = np.unique(canonical, return_inverse=True)
    table = np.stack(
        [_icd10_messy_small(uniq, np.full(len(uniq), f), asterisk) for f in range(4)], axis=1
    )
    return table[inv.ravel(), np.asarray(form, dtype=np.int64)]


def _icd10_messy_small(canonical: np.ndarray, form: np.ndarray, asterisk: set[str]) -> np.ndarray:
    """Render canonical ICD-10 codes (3-char ``I10`` or 4-char ``I500``) in one of the forms
    SUS data carries, chosen by ``form`` (0..3):

    - 4-char: 0 ``I500``, 1 ``I50.0``, 2 ``I500-``, 3 ``I50.0*`` (asterisk codes) / ``I50.0``
    - 3-char: 0 ``I10``, 1 ``I10X``, 2 ``I10-``, 3 ``I10X``

    All of them normalise back to the canonical code (4-char without dot/marks; ``X``/``-``
    filler of 3-char codes dropped).
    """
    canonical = np.asarray(canonical, dtype="U4")
    is4 = np.char.str_len(canonical) == 4
    head = canonical.astype("U3")
    tail = np.where(is4, np.char.replace(canonical, head, "", count=1), "").astype("U1")
    dotted = np.char.add(np.char.add(head, "."), tail)
    star = np.isin(head, list(asterisk))
    f4 = np.select(
        [form == 0, form == 1, form == 2, (form == 3) & star],
        [canonical, dotted, np.char.add(canonical, "-"), np.char.add(dotted, "*")],
        default=dotted,
    )
    f3 = np.select(
        [form == 0, form == 1, form == 2],
        [canonical, np.char.add(canonical, "X"), np.char.add(canonical, "-")],
        default=np.char.add(canonical, "X"),
    )
    return np.where(is4, f4, f3).astype("U8")
