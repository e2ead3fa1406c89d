"""The coded GP record (gp_events) and prescribing (gp_medications)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import numpy as np

from phm.codelists import is_valid_sctid
from phm.synth import community
from phm.synth._util import NEVER, YEAR, poisson_events, repeat_offsets, uniform_days
from phm.synth.clinical import Conditions, Frailty, RiskFactors, deficits_at
from phm.synth.codes import (
    all_vendored_codes,
    load_codelist,
    load_codelist_terms,
    synthetic_sctid,
    weighted_codes,
)
from phm.synth.community import Appointments, Engagement, Ppn, Referrals
from phm.synth.population import CURRENT, Demography, Registrations


class Sampler:
    """Draws global code ids from a mixture of weighted code lists."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]], weights: list[float]):
        self.parts = parts
        w = np.asarray(weights, dtype=float)
        self.cum = np.cumsum(w / w.sum())
        self.cum[-1] = 1.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = np.searchsorted(self.cum, rng.random(n), side="right")
        out = np.empty(n, dtype=np.int32)
        for i, (ids, cum) in enumerate(self.parts):
            sel = np.flatnonzero(which == i)
            out[sel] = ids[np.searchsorted(cum, rng.random(len(sel)), side="right")]
        return out


@dataclass
class CodeBook:
    """All SNOMED ids the generator may write, each with a global integer id."""

    codes: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def ids(self, codes: tuple[str, ...] | list[str]) -> np.ndarray:
        out = np.empty(len(codes), dtype=np.int32)
        for i, c in enumerate(codes):
            if c not in self.index:
                self.index[c] = len(self.codes)
                self.codes.append(c)
            out[i] = self.index[c]
        return out

    def list_sampler(
        self,
        spec: str,
        preferred: list[str] | None = None,
        preferred_weights: list[float] | None = None,
        front: set[str] | None = None,
        only: set[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        codes = load_codelist(spec)
        if only is not None:
            codes = tuple(c for c in codes if c in only)
            if not codes:
                return None
        wc = weighted_codes(codes, preferred, preferred_weights, front=front)
        return self.ids(wc.codes), wc.cum

    def single(self, code: str) -> int:
        return int(self.ids([code])[0])


def condition_samplers(book: CodeBook, params: dict, sex: str | None = None) -> list[Sampler]:
    """One sampler per condition; with ``sex`` ("M"/"F"), codes whose term only fits the other
    sex are left out (``exclude_terms_male``/``exclude_terms_female`` in the YAML)."""
    fp = params["frailty"]
    out = []
    for c in params["conditions"].values():
        specs = c.get("codelists") or [c["codelist"]]
        sw = c.get("codelist_weights") or [1.0] * len(specs)
        pref = [str(p) for p in c.get("preferred", [])]
        pw = c.get("preferred_weights")
        parts, weights = [], []
        efi = set(load_codelist(f"gm:{c['efi']}/1")) if c.get("efi") else None
        pattern = c.get({"M": "exclude_terms_male", "F": "exclude_terms_female"}.get(sex or "", ""))
        for spec, w in zip(specs, sw, strict=True):
            keep = None
            if pattern:
                terms = load_codelist_terms(spec)
                rx = re.compile(pattern)
                keep = {code for code in load_codelist(spec) if not rx.search(terms.get(code, ""))}
            full = book.list_sampler(spec, pref, pw, only=keep)
            assert full is not None
            if efi:
                overlap = book.list_sampler(
                    spec, pref, None, only=efi if keep is None else efi & keep
                )
                if overlap is not None:
                    parts += [overlap, full]
                    weights += [w * fp["efi_overlap_prob"], w * (1 - fp["efi_overlap_prob"])]
                    continue
            parts.append(full)
            weights.append(w)
        out.append(Sampler(parts, weights))
    return out


def simple_sampler(book: CodeBook, spec: str, preferred: list[str] | None = None) -> Sampler:
    s = book.list_sampler(spec, preferred)
    assert s is not None
    return Sampler([s], [1.0])


def check_noise_codes(params: dict) -> None:
    """Observation codes must be valid SNOMED ids that belong to no vendored list."""
    vendored = all_vendored_codes()
    for key, spec in params["observations"]["codes"].items():
        code = str(spec["code"])
        if not is_valid_sctid(code):
            raise ValueError(f"observation code {key} {code} fails the SNOMED check")
        if code in vendored:
            raise ValueError(f"observation code {key} {code} is in a vendored code list")


class Parts:
    """Accumulates (person, day, code id, value) event arrays."""

    def __init__(self) -> None:
        self.pid: list[np.ndarray] = []
        self.day: list[np.ndarray] = []
        self.code: list[np.ndarray] = []
        self.value: list[np.ndarray] = []

    def add(self, pid, day, code, value=None) -> None:
        n = len(pid)
        self.pid.append(np.asarray(pid, dtype=np.int32))
        self.day.append(np.asarray(day, dtype=np.int32))
        code = np.asarray(code, dtype=np.int32)
        self.code.append(np.full(n, code, dtype=np.int32) if code.ndim == 0 else code)
        self.value.append(
            np.full(n, np.nan) if value is None else np.asarray(value, dtype=np.float64)
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.concatenate(self.pid),
            np.concatenate(self.day),
            np.concatenate(self.code),
            np.concatenate(self.value),
        )


def make_carers(
    rng: np.random.Generator, params: dict, dem: Demography, extract_day: int
) -> np.ndarray:
    age = (extract_day - dem.dob) / YEAR
    p = params["other_codes"]["carer_rate"] * np.where((age >= 35) & (age < 75), 1.6, 0.6)
    p = p * np.where(dem.sex == "F", 1.3, 0.8) * (age >= 16)
    return rng.random(len(age)) < p


def make_invites(
    rng: np.random.Generator,
    params: dict,
    book: CodeBook,
    dem: Demography,
    cond: Conditions,
    reg: Registrations,
    eng: Engagement,
    extract_day: int,
) -> tuple[Parts, np.ndarray]:
    """QOF invitation codes; returns the events and each person's first invite day (-1)."""
    oc = params["other_codes"]
    n = len(dem.dob)
    last = np.minimum(np.where(reg.status == CURRENT, extract_day, reg.end), extract_day)
    parts = Parts()
    per_year = oc["invites_per_year"] * np.where(eng.low, 2.5, 1.0)
    window_lo = extract_day - 729
    for key in ("diabetes", "hypertension", "depression"):
        j = cond.index(key)
        onset = cond.onset[:, j]
        lo = np.maximum(window_lo, onset + 60)
        ok = (onset <= extract_day) & cond.active(extract_day)[:, j]
        pid, day = poisson_events(rng, np.where(ok, per_year, 0.0), lo, last)
        s = simple_sampler(book, oc["invites"][key])
        parts.add(pid, day, s.sample(rng, len(pid)))
    # seasonal flu invitations (September - December) for over-65s and at-risk adults
    age = (extract_day - dem.dob) / YEAR
    n_ltc = cond.active(extract_day).sum(axis=1)
    flu_ok = (age >= 65) | ((n_ltc >= 1) & (age >= 18))
    s = simple_sampler(book, oc["invites"]["flu"])
    epoch = dt.date(1970, 1, 1)
    e = epoch + dt.timedelta(days=int(extract_day))
    for yr in (e.year - 2, e.year - 1, e.year):
        sep1 = (dt.date(yr, 9, 1) - epoch).days
        dec31 = (dt.date(yr, 12, 31) - epoch).days
        if sep1 > extract_day or sep1 < window_lo:
            continue
        hi = np.minimum(np.minimum(dec31, extract_day), last)
        count = np.where(flu_ok & (hi >= sep1), 1 + (rng.random(n) < 0.3) + eng.low, 0)
        pid = np.repeat(np.arange(n, dtype=np.int32), count)
        day = uniform_days(rng, np.full(len(pid), sep1), hi[pid])
        parts.add(pid, day, s.sample(rng, len(pid)))
    pid, day, _, _ = parts.arrays()
    first = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first, pid, day)
    first = np.where(first == NEVER, -1, first)
    return parts, first


def make_events(
    rng: np.random.Generator,
    params: dict,
    book: CodeBook,
    dem: Demography,
    rf: RiskFactors,
    cond: Conditions,
    fr: Frailty,
    reg: Registrations,
    eng: Engagement,
    appts: Appointments,
    refs: Referrals,
    ppn: Ppn,
    carer: np.ndarray,
    invites: Parts,
    extract_day: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All gp_events rows as (person, day, code id, numeric value or NaN), unsorted."""
    oc, ob = params["other_codes"], params["observations"]
    n = len(dem.dob)
    last = np.minimum(np.where(reg.status == CURRENT, extract_day, reg.end), extract_day)
    age_e = (extract_day - dem.dob) / YEAR
    parts = Parts()
    by_sex = {sx: condition_samplers(book, params, sx) for sx in ("M", "F", None)}
    sex_group = np.where(dem.sex == "M", 0, np.where(dem.sex == "F", 1, 2))

    def cond_codes(j: int, pid: np.ndarray) -> np.ndarray:
        out = np.empty(len(pid), dtype=np.int32)
        g = sex_group[pid]
        for gi, sx in enumerate(("M", "F", None)):
            sel = np.flatnonzero(g == gi)
            out[sel] = by_sex[sx][j].sample(rng, len(sel))
        return out

    # diagnoses, repeats, resolutions, relapses
    five_y = extract_day - int(5 * YEAR)
    rep_rate = oc["repeat_code_rate"]
    for j, key in enumerate(cond.keys):
        c = params["conditions"][key]
        on = cond.onset[:, j]
        pid = np.flatnonzero(on <= last)
        parts.add(pid, on[pid], cond_codes(j, pid))
        lo = np.maximum(on, five_y) + 30
        ok = (on <= last) & (lo <= last)
        rp, rd = poisson_events(rng, np.where(ok, rep_rate, 0.0), lo, last)
        parts.add(rp, rd, cond_codes(j, rp))
        if c.get("resolved"):
            res = cond.res[:, j]
            pid = np.flatnonzero(res <= last)
            parts.add(pid, res[pid], simple_sampler(book, c["resolved"]).sample(rng, len(pid)))
            rel = cond.relapse[:, j]
            pid = np.flatnonzero(rel <= last)
            parts.add(pid, rel[pid], cond_codes(j, pid))
    # frailty deficits and frailty category codes
    fp = params["frailty"]
    for j, key in enumerate(fr.keys):
        on = fr.onset[:, j]
        pid = np.flatnonzero(on <= last)
        parts.add(pid, on[pid], simple_sampler(book, f"gm:{key}/1").sample(rng, len(pid)))
    defs = deficits_at(cond, fr, extract_day)
    efi = defs / 36.0
    frail_ok = (age_e >= 65) & (efi >= 0.12) & (rng.random(n) < fp["frailty_code_prob"])
    level = np.where(efi >= 0.36, "severe", np.where(efi >= 0.24, "moderate", "mild"))
    for lv in ("mild", "moderate", "severe"):
        pid = np.flatnonzero(frail_ok & (level == lv))
        day = uniform_days(rng, np.maximum(extract_day - 729, dem.dob[pid]), last[pid])
        parts.add(pid, day, simple_sampler(book, fp["frailty_codes"][lv]).sample(rng, len(pid)))
    # routine observations (codes in no vendored list) with values
    _observations(rng, params, book, parts, dem, rf, cond, reg, last, extract_day)
    # smoking status
    adult = age_e >= 16
    rec = adult & (rng.random(n) < ob["smoking_recorded_prob"])
    lo = np.maximum(five_y, dem.dob + int(16 * YEAR))
    for status, spec in (
        (2, ob["smoking_current"]),
        (1, ob["smoking_ex"]),
        (0, ob["smoking_never"]),
    ):
        pid = np.flatnonzero(rec & (rf.smoking == status) & (lo <= last))
        parts.add(
            pid,
            uniform_days(rng, lo[pid], last[pid]),
            simple_sampler(book, spec).sample(rng, len(pid)),
        )
    # invitations (made earlier), DNA codes for missed appointments
    for i in range(len(invites.pid)):
        parts.add(invites.pid[i], invites.day[i], invites.code[i])
    dna = np.flatnonzero((appts.status == community.DNA) & (appts.day <= extract_day))
    dna = dna[rng.random(len(dna)) < oc["dna_code_prob"]]
    parts.add(
        appts.pid[dna],
        appts.day[dna],
        simple_sampler(book, oc["did_not_attend"], oc["dna_preferred"]).sample(rng, len(dna)),
    )
    # carers
    pid = np.flatnonzero(carer & (five_y <= last))
    parts.add(
        pid,
        uniform_days(rng, np.maximum(five_y, dem.dob[pid]), last[pid]),
        simple_sampler(book, oc["carer"]).sample(rng, len(pid)),
    )
    # anxiety symptoms in people without an anxiety diagnosis
    act = cond.active(extract_day)
    anx = act[:, cond.index("anxiety")]
    dep_ = act[:, cond.index("depression")]
    p = oc["anxiety_symptom_rate"] * (1 + 1.5 * eng.low + 1.0 * dep_ + 2.0 * eng.ppn_group)
    sym = (age_e >= 16) & ~anx & (rng.random(n) < np.minimum(p, 0.6))
    count = np.where(sym, 1 + rng.poisson(0.8, n), 0)
    pid = np.repeat(np.arange(n, dtype=np.int32), count)
    lo3 = np.maximum(extract_day - 1094, dem.dob + int(16 * YEAR))
    ok = lo3[pid] <= last[pid]
    pid = pid[ok]
    parts.add(
        pid,
        uniform_days(rng, lo3[pid], last[pid]),
        simple_sampler(book, oc["anxiety_symptoms"]).sample(rng, len(pid)),
    )
    # homelessness
    subst = act[:, cond.index("substance_misuse")]
    p = oc["homeless_rate"] * (1 + 8 * eng.ppn_group + 3 * subst)
    pid = np.flatnonzero((age_e >= 16) & (rng.random(n) < p) & (lo3 <= last))
    parts.add(
        pid,
        uniform_days(rng, lo3[pid], last[pid]),
        simple_sampler(book, oc["homeless"]).sample(rng, len(pid)),
    )
    # palliative care: before death, or advanced illness now
    ci = [cond.index(k) for k in ("cancer", "dementia", "heart_failure")]
    died = reg.death < NEVER
    serious_at_death = cond.active(np.minimum(reg.death, extract_day))[:, ci].any(axis=1)
    pal = died & serious_at_death & (rng.random(n) < 0.55)
    pal |= (
        (reg.status == CURRENT)
        & act[:, ci[0]]
        & (age_e >= 75)
        & (defs >= 6)
        & (rng.random(n) < 0.1)
    )
    count = np.where(pal, 1 + rng.poisson(0.7, n), 0)
    pid = np.repeat(np.arange(n, dtype=np.int32), count)
    plo = np.maximum(last[pid] - 180, dem.dob[pid])
    parts.add(
        pid,
        uniform_days(rng, plo, last[pid]),
        simple_sampler(book, oc["palliative"]).sample(rng, len(pid)),
    )
    # safeguarding and mental-health referrals after police notifications
    sg = np.isin(ppn.category, ["adult_at_risk", "domestic_abuse", "child_at_risk"]) & (
        rng.random(len(ppn.pid)) < 0.3
    )
    mh = (ppn.category == "mental_health") & (rng.random(len(ppn.pid)) < 0.3)
    for sel, spec in ((sg, oc["safeguarding"]), (mh, oc["mh_referral"])):
        idx = np.flatnonzero(sel)
        day = ppn.shared[idx] + np.floor(rng.random(len(idx)) * 15).astype(np.int32)
        ok = day <= last[ppn.pid[idx]]
        idx, day = idx[ok], day[ok]
        parts.add(ppn.pid[idx], day, simple_sampler(book, spec).sample(rng, len(idx)))
    # social prescribing referral code
    idx = np.flatnonzero(
        np.isin(refs.source, ["gp", "pcn_mdt"]) & (rng.random(len(refs.pid)) < 0.8)
    )
    parts.add(refs.pid[idx], refs.referral[idx], book.single(oc["social_prescribing_referral"]))
    # self-harm
    p = np.where(dep_ & (eng.ppn_group | eng.low), 0.15, np.where(dep_, 0.02, 0.0))
    pid = np.flatnonzero((age_e >= 12) & (rng.random(n) < p) & (lo3 <= last))
    parts.add(
        pid,
        uniform_days(rng, lo3[pid], last[pid]),
        simple_sampler(book, oc["self_harm"]).sample(rng, len(pid)),
    )
    # non-diabetic hyperglycaemia
    dm = act[:, cond.index("diabetes")]
    p = oc["ndh_rate"] * (1 + dem.south_asian) * (age_e >= 40) * ~dm
    lo5 = np.maximum(five_y, dem.dob)
    pid = np.flatnonzero((rng.random(n) < p) & (lo5 <= last))
    parts.add(
        pid,
        uniform_days(rng, lo5[pid], last[pid]),
        simple_sampler(book, oc["ndh"]).sample(rng, len(pid)),
    )
    pid, day, code, value = parts.arrays()
    keep = (day <= last[pid]) & (day >= dem.dob[pid]) & (day <= extract_day)
    return pid[keep], day[keep], code[keep], value[keep]


def _observations(
    rng: np.random.Generator,
    params: dict,
    book: CodeBook,
    parts: Parts,
    dem: Demography,
    rf: RiskFactors,
    cond: Conditions,
    reg: Registrations,
    last: np.ndarray,
    extract_day: int,
) -> None:
    ob = params["observations"]
    codes = {k: book.single(str(v["code"])) for k, v in ob["codes"].items()}
    bmi_s = simple_sampler(book, ob["bmi_codelist"], ob["bmi_preferred"])
    age = (extract_day - dem.dob) / YEAR
    act = cond.active(extract_day)
    n_ltc = act.sum(axis=1)
    adult = age >= 16
    rate = np.where(
        adult,
        ob["rate_base"] + ob["rate_age"] * np.clip(age - 16, 0, 80) + ob["per_ltc"] * n_ltc,
        ob["child_rate"],
    )
    lo = np.maximum(extract_day - ob["window_days"] + 1, dem.dob)
    pid, day = poisson_events(rng, rate, lo, last)
    m = len(pid)
    ad = adult[pid]
    female = dem.sex[pid] == "F"
    htn = act[pid, cond.index("hypertension")]
    a = age[pid]
    sys_bp = 112 + 0.5 * np.clip(a - 30, 0, None) + 14 * htn - 4 * female + rng.normal(0, 12, m)
    sys_bp = np.clip(np.round(sys_bp), 85, 220)
    dia_bp = np.clip(np.round(0.45 * sys_bp + 18 + rng.normal(0, 7, m)), 45, 130)
    i = np.flatnonzero(ad)
    parts.add(pid[i], day[i], codes["systolic_bp"], sys_bp[i])
    parts.add(pid[i], day[i], codes["diastolic_bp"], dia_bp[i])
    h = rf.height_m[pid]
    bmi = rf.bmi[pid] + rng.normal(0, 0.6, m)
    weight = np.round(bmi * h * h + rng.normal(0, 1.0, m), 1)
    sel = rng.random(m) < np.where(ad, 0.5, 0.6)
    parts.add(pid[sel], day[sel], codes["weight"], np.maximum(weight[sel], 2.0))
    sel = ~ad & (rng.random(m) < 0.4) | ad & (rng.random(m) < 0.05)
    parts.add(pid[sel], day[sel], codes["height"], np.round(h[sel] * 100, 1))
    sel = ad & (rng.random(m) < 0.35)
    parts.add(pid[sel], day[sel], bmi_s.sample(rng, int(sel.sum())), np.round(bmi[sel], 1))
    sel = rng.random(m) < 0.2
    parts.add(
        pid[sel], day[sel], codes["heart_rate"], np.round(74 + rng.normal(0, 10, int(sel.sum())))
    )
    copd = act[pid, cond.index("copd")]
    sel = rng.random(m) < 0.1
    spo2 = np.clip(np.round(97 - 2.5 * copd[sel] + rng.normal(0, 1.2, int(sel.sum()))), 82, 100)
    parts.add(pid[sel], day[sel], codes["spo2"], spo2)
    sel = ad & (n_ltc[pid] >= 1) & (rng.random(m) < 0.25)
    parts.add(pid[sel], day[sel], codes["medication_review"])
    sel = rng.random(m) < 0.15
    parts.add(pid[sel], day[sel], codes["telephone_encounter"])
    dm = act[pid, cond.index("diabetes")]
    sel = dm & (rng.random(m) < 0.6)
    hba1c = np.clip(np.round(55 + rng.normal(0, 13, int(sel.sum()))), 30, 140)
    parts.add(pid[sel], day[sel], codes["hba1c"], hba1c)
    ckd = act[pid, cond.index("ckd")]
    sel = (ckd | dm | htn) & (rng.random(m) < 0.4)
    egfr = np.where(
        ckd[sel],
        20 + rng.random(int(sel.sum())) * 39,
        np.clip(
            100 - 0.7 * np.clip(a[sel] - 40, 0, None) + rng.normal(0, 10, int(sel.sum())), 60, 120
        ),
    )
    parts.add(pid[sel], day[sel], codes["egfr"], np.round(egfr))


# --- medications ---------------------------------------------------------------------------------


@dataclass
class MedTable:
    name: np.ndarray
    bnf: np.ndarray
    dmd: np.ndarray
    qty: np.ndarray


def medication_table(params: dict) -> MedTable:
    meds = params["medications"]
    names = list(dict.fromkeys(m["name"] for m in meds))
    synthetic = {name: synthetic_sctid(700000 + i) for i, name in enumerate(names)}
    dmd = []
    for m in meds:
        if m.get("dmd"):
            code = str(m["dmd"])
            if not code.isdigit():
                raise ValueError(f"medication {m['key']}: dm+d id must be digits")
            dmd.append(code)
        else:
            dmd.append(synthetic[m["name"]])
        bnf = str(m["bnf"])
        if len(bnf) > 15 or not bnf[:4].isdigit() or not 1 <= int(bnf[:2]) <= 15:
            raise ValueError(f"medication {m['key']}: bad BNF code {bnf}")
    return MedTable(
        np.asarray([m["name"] for m in meds]),
        np.asarray([str(m["bnf"]) for m in meds]),
        np.asarray(dmd),
        np.asarray([float(m["qty"]) for m in meds]),
    )


def make_medications(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    reg: Registrations,
    extract_day: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Issues as (person, day, index into params['medications'])."""
    meds = params["medications"]
    ms = params["medication_settings"]
    n = len(dem.dob)
    last = np.minimum(np.where(reg.status == CURRENT, extract_day, reg.end), extract_day)
    window_lo = extract_day - ms["window_days"] + 1
    age = (extract_day - dem.dob) / YEAR
    act_last = cond.active(last)
    n_ltc = act_last.sum(axis=1)
    observed = last >= np.maximum(window_lo, dem.dob)
    pids, days, midx = [], [], []
    for i, m in enumerate(meds):
        when = m["when"]
        interval = int(m["interval"])
        if when == "acute":
            rate = m["prob"] * (1 + 0.3 * n_ltc) * ms["acute_per_year_scale"]
            pid, day = poisson_events(
                rng, np.where(observed, rate, 0.0), np.maximum(window_lo, dem.dob), last
            )
        else:
            if when in cond.keys:
                j = cond.index(when)
                eligible = act_last[:, j]
                start = cond.onset[:, j] + np.floor(rng.random(n) * 60).astype(np.int64)
                p = np.full(n, float(m["prob"]))
            elif when == "age65":
                eligible = age >= 65
                start = np.full(n, window_lo, dtype=np.int64)
                p = np.minimum(m["prob"] * (1 + 0.25 * n_ltc), 0.9)
            elif when == "female_16_45":
                eligible = (dem.sex == "F") & (age >= 16) & (age <= 45)
                start = np.full(n, window_lo, dtype=np.int64)
                p = np.full(n, float(m["prob"]))
            elif when == "any_adult":
                eligible = age >= 18
                start = np.full(n, window_lo, dtype=np.int64)
                p = np.full(n, float(m["prob"]))
            else:
                raise ValueError(f"medication {m['key']}: unknown 'when' {when!r}")
            if m.get("sex"):
                eligible = eligible & (dem.sex == m["sex"])
            on = eligible & observed & (rng.random(n) < p)
            idx = np.flatnonzero(on)
            first = np.maximum(start[idx], np.maximum(window_lo, dem.dob[idx])) + np.floor(
                rng.random(len(idx)) * interval
            ).astype(np.int64)
            count = np.where(first <= last[idx], (last[idx] - first) // interval + 1, 0)
            pid = np.repeat(idx, count).astype(np.int32)
            day = (np.repeat(first, count) + repeat_offsets(count) * interval).astype(np.int32)
            keep = rng.random(len(pid)) >= ms["adherence_skip"]
            pid, day = pid[keep], day[keep]
        pids.append(pid)
        days.append(day)
        midx.append(np.full(len(pid), i, dtype=np.int16))
    return np.concatenate(pids), np.concatenate(days), np.concatenate(midx)
