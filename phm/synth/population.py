"""People, where they live, their practices and PCNs, and their registrations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from phm.synth._util import NEVER, YEAR, bisect_offset, logistic, sample_rows, sample_weighted
from phm.synth.reference import Lsoas, load_practice_candidates

CURRENT, LEFT, DIED = 0, 1, 2


@dataclass
class Demography:
    """Per-person demographic arrays (length = pool size)."""

    lsoa: np.ndarray  # int32 index into Lsoas, -1 = unknown
    dob: np.ndarray  # int32 days since epoch
    sex: np.ndarray  # U1
    ethnicity: np.ndarray  # U2, "" = null
    south_asian: np.ndarray
    black: np.ndarray
    dep: np.ndarray  # float: (10 - decile) / 9, 1 = most deprived
    decile: np.ndarray  # int (imputed where LSOA unknown)

    def subset(self, idx: np.ndarray) -> Demography:
        return Demography(**{k: v[idx] for k, v in self.__dict__.items()})


def _single_year_weights(bands: list[list[float]], lo: int, hi: int) -> np.ndarray:
    """Weights for single years lo..hi from 5-year band percentages (uniform in a band;
    the open top band decays geometrically)."""
    ages = np.arange(lo, hi + 1)
    w = np.zeros(len(ages))
    for a0, a1, pct in bands:
        width = a1 - a0 + 1
        inband = (ages >= a0) & (ages <= a1)
        if a1 - a0 > 5:  # open-ended top band
            decay = 0.78 ** (ages[inband] - a0)
            w[inband] = pct * decay / (0.78 ** np.arange(width)).sum()
        else:
            w[inband] = pct / width
    return w


def _survival_boost(ages: np.ndarray, pp: dict) -> np.ndarray:
    """The pool also holds the people who die before the extract date: inflate older ages by
    about 1 / P(survive two years) so the survivors keep the target age structure."""
    q = np.minimum(0.5, pp["mortality_q80"] * 3.0 * np.exp(pp["mortality_slope"] * (ages - 80)))
    return 1.0 / (1.0 - q) ** 2


def make_demography(
    rng: np.random.Generator, n: int, lsoas: Lsoas, params: dict, extract_day: int
) -> Demography:
    pp = params["population"]
    geo = params["geography"]
    # LSOA by mid-2015 population; a few unknown addresses
    li = sample_weighted(rng, lsoas.pop_total, n)
    # age group by the LSOA's own 0-15 / 16-59 / 60+ split
    groups = np.stack([lsoas.pop_0_15, lsoas.pop_16_59, lsoas.pop_60plus], axis=1)
    g = sample_rows(rng, groups, li)
    bands = pp["age_bands"]
    age = np.zeros(n, dtype=np.int32)
    for gi, (lo, hi) in enumerate(((0, 15), (16, 59), (60, 104))):
        sel = np.flatnonzero(g == gi)
        w = _single_year_weights(bands, lo, hi) * _survival_boost(np.arange(lo, hi + 1), pp)
        age[sel] = lo + sample_weighted(rng, w, len(sel))
    day_in_year = np.floor(rng.random(n) * 365.25)
    dob = (extract_day - np.floor(age * YEAR) - day_in_year).astype(np.int32)
    dob = np.minimum(dob, extract_day)
    sex_keys = list(pp["sex"])
    sex = np.asarray(sex_keys, dtype="U1")[sample_weighted(rng, pp["sex"], n)]
    eth_keys = [str(k) for k in pp["ethnicity"]]
    eth = np.asarray(eth_keys, dtype="U2")[sample_weighted(rng, list(pp["ethnicity"].values()), n)]
    eth[rng.random(n) < pp["ethnicity_null_rate"]] = ""
    south_asian = np.isin(eth, pp["south_asian"])
    black = np.isin(eth, pp["black"])
    decile = lsoas.imd_decile[li].astype(np.int32)
    unknown = rng.random(n) < geo["null_lsoa_rate"]
    li = np.where(unknown, -1, li).astype(np.int32)
    decile = np.where(unknown, geo["assumed_decile_if_null"], decile).astype(np.int32)
    dep = (10 - decile) / 9.0
    return Demography(li, dob, sex, eth, south_asian, black, dep, decile)


# --- practices and PCNs -------------------------------------------------------------------------


def _hilbert_index(x: np.ndarray, y: np.ndarray, order: int = 10) -> np.ndarray:
    """Position along a Hilbert curve of points scaled to the unit square (vectorised)."""
    n = 2**order
    xi = np.clip(((x - x.min()) / max(np.ptp(x), 1e-9) * (n - 1)).astype(np.int64), 0, n - 1)
    yi = np.clip(((y - y.min()) / max(np.ptp(y), 1e-9) * (n - 1)).astype(np.int64), 0, n - 1)
    d = np.zeros_like(xi)
    s = n // 2
    while s > 0:
        rx = ((xi & s) > 0).astype(np.int64)
        ry = ((yi & s) > 0).astype(np.int64)
        d += s * s * ((3 * rx) ^ ry)
        # rotate
        flip = ry == 0
        swap_x = np.where(flip & (rx == 1), s - 1 - xi, xi)
        swap_y = np.where(flip & (rx == 1), s - 1 - yi, yi)
        xi, yi = np.where(flip, swap_y, swap_x), np.where(flip, swap_x, swap_y)
        s //= 2
    return d


@dataclass
class Practices:
    table: pl.DataFrame  # practice_code, practice_name, pcn_code, pcn_name, icb_code
    code: np.ndarray
    home_lsoa: np.ndarray  # int index into Lsoas
    choice_probs: np.ndarray  # (n_lsoa, n_practices): P(practice | LSOA)
    overall: np.ndarray  # P(practice) for people with unknown LSOA


def make_practices(
    rng: np.random.Generator, n_patients: int, lsoas: Lsoas, params: dict
) -> Practices:
    pp = params["practices"]
    cand = load_practice_candidates(pp["home_commissioner"], tuple(pp["other_commissioners"]))
    wanted = max(pp["min_practices"], round(n_patients / pp["patients_per_practice"]))
    n_pr = min(wanted, cand.height, len(lsoas.code))
    if n_pr < pp["min_practices"]:
        raise ValueError("not enough active practices in the ODS file")
    chosen = cand.head(n_pr)
    # home LSOAs: distinct, population-weighted
    p = lsoas.pop_total / lsoas.pop_total.sum()
    home = rng.choice(len(lsoas.code), size=n_pr, replace=False, p=p)
    # distance-decay choice model, attractiveness balanced to lognormal list sizes (IPF)
    dx = lsoas.x[:, None] - lsoas.x[home][None, :]
    dy = lsoas.y[:, None] - lsoas.y[home][None, :]
    dist_km = np.sqrt(dx**2 + dy**2) / 1000.0
    kern = np.exp(-dist_km / pp["distance_scale_km"])
    target = np.exp(rng.normal(0, pp["list_size_sd_log"], n_pr))
    target = target / target.sum()
    pop = lsoas.pop_total / lsoas.pop_total.sum()
    attract = np.ones(n_pr)
    for _ in range(60):
        probs = kern * attract[None, :]
        probs /= probs.sum(axis=1, keepdims=True)
        expected = (pop[:, None] * probs).sum(axis=0)
        attract *= (target / expected) ** 0.7
    probs = kern * attract[None, :]
    probs /= probs.sum(axis=1, keepdims=True)
    overall = (pop[:, None] * probs).sum(axis=0)
    # PCNs: consecutive runs along a Hilbert curve through the home LSOAs
    order = np.argsort(_hilbert_index(lsoas.x[home], lsoas.y[home]), kind="stable")
    n_pcn = max(2, round(n_pr / 4.5))
    n_pcn = int(np.clip(n_pcn, -(-n_pr // pp["pcn_size_max"]), n_pr // pp["pcn_size_min"]))
    n_pcn = max(n_pcn, 2)
    base, extra = divmod(n_pr, n_pcn)
    sizes = np.array([base + 1] * extra + [base] * (n_pcn - extra))
    sizes = sizes[rng.permutation(n_pcn)]
    pcn_of_rank = np.repeat(np.arange(n_pcn), sizes)
    pcn_idx = np.empty(n_pr, dtype=np.int32)
    pcn_idx[order] = pcn_of_rank
    pcn_codes = np.array(
        [f"U{c:05d}" for c in rng.choice(np.arange(10000, 100000), n_pcn, replace=False)]
    )
    names = list(dict.fromkeys(pp["pcn_names"]))
    pcn_names = []
    for i in range(n_pcn):
        base_name = names[i % len(names)]
        suffix = "" if i < len(names) else f" {i // len(names) + 1}"
        pcn_names.append(f"{base_name}{suffix} PCN")
    table = pl.DataFrame(
        {
            "practice_code": chosen["practice_code"],
            "practice_name": chosen["practice_name"],
            "pcn_code": pcn_codes[pcn_idx],
            "pcn_name": np.asarray(pcn_names)[pcn_idx],
            "icb_code": [pp["icb_code"]] * n_pr,
        }
    ).sort(["pcn_code", "practice_code"])
    # keep arrays aligned with the original practice order
    return Practices(
        table=table,
        code=chosen["practice_code"].to_numpy().astype("U6"),
        home_lsoa=home,
        choice_probs=probs,
        overall=overall,
    )


def choose_practice(rng: np.random.Generator, pr: Practices, lsoa: np.ndarray) -> np.ndarray:
    out = np.empty(len(lsoa), dtype=np.int32)
    known = lsoa >= 0
    out[known] = sample_rows(rng, pr.choice_probs, lsoa[known])
    out[~known] = sample_weighted(rng, pr.overall, int((~known).sum()))
    return out


# --- registrations --------------------------------------------------------------------------------


@dataclass
class Registrations:
    status: np.ndarray  # CURRENT / LEFT / DIED
    practice: np.ndarray  # int index into Practices.code
    start: np.ndarray  # int32 days
    end: np.ndarray  # int32 days, NEVER = current
    death: np.ndarray  # int32 days, NEVER = alive
    prev_practice: np.ndarray  # for in-area transfers, -1 = none
    prev_start: np.ndarray
    prev_end: np.ndarray


def _years_registered(rng: np.random.Generator, n: int, pp: dict) -> np.ndarray:
    recent = rng.random(n) < pp["years_registered_recent_share"]
    return np.where(
        recent,
        rng.exponential(pp["years_registered_recent_mean"], n),
        rng.exponential(pp["years_registered_settled_mean"], n),
    )


def make_registrations(
    rng: np.random.Generator,
    dem: Demography,
    status: np.ndarray,
    end_day: np.ndarray,
    practice: np.ndarray,
    n_practices: int,
    params: dict,
    extract_day: int,
) -> Registrations:
    pp = params["population"]
    n = len(status)
    anchor = np.where(status == CURRENT, extract_day, end_day)
    years = _years_registered(rng, n, pp)
    start = (anchor - np.floor(years * YEAR)).astype(np.int64)
    baby_delay = 7 + np.floor(rng.random(n) * 42)
    start = np.maximum(start, dem.dob + baby_delay)
    start = np.minimum(start, anchor).astype(np.int32)
    end = np.where(status == CURRENT, NEVER, end_day).astype(np.int32)
    death = np.where(status == DIED, end_day, NEVER).astype(np.int32)
    # in-area transfers: a current patient whose previous registration ended recently
    age_days = extract_day - dem.dob
    eligible = (status == CURRENT) & (age_days > 2 * 365)
    tr = eligible & (rng.random(n) < pp["transfer_in_area_rate"])
    prev_practice = np.full(n, -1, dtype=np.int32)
    prev_start = np.full(n, NEVER, dtype=np.int32)
    prev_end = np.full(n, NEVER, dtype=np.int32)
    idx = np.flatnonzero(tr)
    new_start = (extract_day - 30 - np.floor(rng.random(len(idx)) * (3 * 365 - 30))).astype(
        np.int64
    )
    new_start = np.maximum(new_start, dem.dob[idx] + 365)
    start[idx] = new_start
    prev_end[idx] = new_start - 1
    ps = new_start - 1 - np.floor(rng.exponential(6.0, len(idx)) * YEAR) - 30
    prev_start[idx] = np.maximum(ps, dem.dob[idx] + baby_delay[idx]).astype(np.int32)
    shift = 1 + np.floor(rng.random(len(idx)) * (n_practices - 1)).astype(np.int32)
    prev_practice[idx] = (practice[idx] + shift) % n_practices
    return Registrations(status, practice, start, end, death, prev_practice, prev_start, prev_end)


def mortality_and_leaving(
    rng: np.random.Generator,
    dem: Demography,
    death_logrr: np.ndarray,
    deficits: np.ndarray,
    params: dict,
    extract_day: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Status (CURRENT/LEFT/DIED) and end day (death or leaving) over the last two years."""
    pp = params["population"]
    n = len(dem.dob)
    age = (extract_day - 365 - dem.dob) / YEAR
    q = pp["mortality_q80"] * np.exp(pp["mortality_slope"] * (age - 80))
    q = q * np.exp(death_logrr + pp["mortality_per_deficit"] * deficits)
    q = np.where(age < 1, pp["infant_q"], q)
    q = np.clip(q, 0, 0.9)
    p_die_2y = 1 - (1 - q) ** 2
    window_start = extract_day - 729
    first_day = np.maximum(window_start, dem.dob + 1)
    # a baby born on the extract date cannot have died or left before it
    can_end = first_day <= extract_day
    dies = (rng.random(n) < p_die_2y) & can_end
    end_day = first_day + np.floor(rng.random(n) * np.maximum(extract_day - first_day + 1, 1))
    end_day = np.minimum(end_day, extract_day)
    alive = ~dies
    age_now = (extract_day - dem.dob) / YEAR
    mobile = 1.0 + 1.2 * ((age_now >= 18) & (age_now < 35))
    leaves = alive & can_end & (rng.random(n) < pp["left_rate_2y"] * mobile)
    status = np.where(dies, DIED, np.where(leaves, LEFT, CURRENT)).astype(np.int8)
    return status, end_day.astype(np.int32)


def cut_pool(status: np.ndarray, n_current: int) -> np.ndarray:
    """Indices of the pool prefix that holds exactly ``n_current`` current patients."""
    cum = np.cumsum(status == CURRENT)
    if cum[-1] < n_current:
        raise RuntimeError("population pool too small; raise population.pool_factor")
    last = int(np.searchsorted(cum, n_current))
    return np.arange(last + 1)


def calibrated_bernoulli(rng: np.random.Generator, score: np.ndarray, target: float) -> np.ndarray:
    c = bisect_offset(score, target)
    return rng.random(len(score)) < logistic(score + c)


@dataclass
class Lsoa21:
    """LSOA 2021 codes of each of the area's LSOA 2011 codes (same order): ``code21`` and
    ``code21b`` are equal (and equal to ``code11``) unless the LSOA was split in 2021."""

    code11: np.ndarray
    code21: np.ndarray
    code21b: np.ndarray


def lsoa21_codes(rng: np.random.Generator, params: dict, codes11: np.ndarray) -> Lsoa21:
    """Most 2021 codes equal the 2011 code; a few 2011 LSOAs (``lsoa21.split_share``) were split
    in 2021 into two new codes ``E01`` + (``new_code_start`` + 2k, + 2k + 1), beyond every
    2011 code (so the IMD 2019 list, which is by LSOA 2011, does not have them)."""
    p = params["lsoa21"]
    code11 = np.asarray(codes11).astype("U9")
    n = len(code11)
    n_split = max(1, round(p["split_share"] * n))
    split = np.sort(rng.choice(n, size=n_split, replace=False))
    new = p["new_code_start"] + 2 * np.arange(n_split)
    a, b = code11.copy(), code11.copy()
    a[split] = np.char.add("E01", np.char.zfill(new.astype(str), 6))
    b[split] = np.char.add("E01", np.char.zfill((new + 1).astype(str), 6))
    return Lsoa21(code11, a, b)


def lsoa21_of_people(l21: Lsoa21, lsoa_idx: np.ndarray, pid: np.ndarray) -> np.ndarray:
    """Each person's 2021 code ('' without an LSOA): residents of a split LSOA are spread over
    its two new codes by person id (deterministic)."""
    i = np.maximum(lsoa_idx, 0)
    code = np.where(pid % 2 == 1, l21.code21b[i], l21.code21[i])
    return np.where(lsoa_idx >= 0, code, "")
