"""Seeded synthetic data generator: one contract delivery for a Leicester population.

``generate()`` simulates a registered population of an English urban area (Leicester city
LSOAs, real GP practice codes grouped into synthetic PCNs), its long-term conditions,
frailty, prescribing, GP appointments, hospital activity, police notifications and social
prescribing, and writes one delivery ``out_root/<YYYY-MM-DD>/`` that follows
the data contract (``docs/data-contract.md``) exactly (``_manifest.json`` last). Sidecars go to
``phm.paths.sidecar_dir(out_root, date)``: ``truth.parquet`` (true emergency-admission
probabilities) and, with ``faults > 0``, ``faults.csv`` (every injected fault).

Same arguments give byte-identical files. Everything is vectorised (numpy/polars).
See docs/synthetic-data.md for the model, parameters, sources and the fault vocabulary.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from phm.contract import TABLE_NAMES
from phm.manifest import write_manifest
from phm.nhs_test_range import NHS_TEST_CAPACITY, NHS_TEST_PATIENTS, NHS_TEST_RANGE_NOTE
from phm.paths import sidecar_dir
from phm.synth import community, events, hospital, impact, population, tables
from phm.synth import faults as fault_injection
from phm.synth.clinical import deficits_at, make_risk_factors, simulate_conditions, simulate_frailty
from phm.synth.codes import generate_nhs_numbers, icd10_messy
from phm.synth.reference import load_lsoas, load_params
from phm.synth.writer import FORMATS, clear_delivery, write_table

__all__ = ["FORMATS", "NHS_TEST_CAPACITY", "NHS_TEST_PATIENTS", "GenerateResult", "generate"]

log = logging.getLogger("phm.synth")

EPOCH = dt.date(1970, 1, 1)

#: independent random streams, one per stage (adding draws to one stage leaves the others alone)
_STREAMS = (
    "demography",
    "risk",
    "conditions",
    "frailty",
    "mortality",
    "practices",
    "registrations",
    "nhs",
    "emergency",
    "spells",
    "diagnoses",
    "ecds",
    "outpatients",
    "engagement",
    "ppn",
    "carers",
    "referrals",
    "outcomes",
    "invites",
    "appointments",
    "events",
    "medications",
    "assets",
    "ids",
    "faults",
    "discharges",
    "lsoa21",
    "impact",
)


@dataclass
class GenerateResult:
    """What ``generate()`` wrote."""

    delivery: Path
    extract_date: dt.date
    fmt: str
    files: dict[str, Path]
    rows: dict[str, int]
    truth: Path
    faults: Path | None
    n_faults: int
    patients: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def sidecars(self) -> dict[str, Path]:
        out = {"truth": self.truth}
        if self.faults is not None:
            out["faults"] = self.faults
        return out


def generate(
    out_root: Path,
    patients: int,
    seed: int,
    extract_date: dt.date,
    faults: float = 0.0,
    fmt: str = "csv",
    *,
    nhs_overflow: bool = False,
) -> GenerateResult:
    """Write one synthetic delivery for ``patients`` currently registered patients.

    ``faults`` is the fraction of rows per table that get one row-level fault (0 = a clean
    delivery in which every row satisfies every contract rule). ``fmt`` is ``csv``,
    ``csv.gz`` or ``parquet``. More than ``NHS_TEST_PATIENTS`` patients need
    ``nhs_overflow=True`` (benchmarks only; see :mod:`phm.nhs_test_range`), which takes the
    rest from the ``998`` prefix (then ``997`` and on), not reserved test ranges.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, not {fmt!r}")
    if patients < 100:
        raise ValueError("patients must be at least 100")
    if not 0.0 <= faults < 0.5:
        raise ValueError("faults must be a fraction in [0, 0.5)")
    if isinstance(extract_date, dt.datetime) or not isinstance(extract_date, dt.date):
        raise TypeError("extract_date must be a datetime.date")
    if not nhs_overflow and patients > NHS_TEST_PATIENTS:
        raise ValueError(f"{NHS_TEST_RANGE_NOTE}: generate fewer patients")
    out_root = Path(out_root)
    date_str = extract_date.isoformat()
    E = (extract_date - EPOCH).days
    params = load_params()
    rngs = {
        name: np.random.default_rng(s)
        for name, s in zip(_STREAMS, np.random.SeedSequence(seed).spawn(len(_STREAMS)), strict=True)
    }
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    @contextmanager
    def stage(name: str):
        t0 = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - t0
        log.info("stage %-12s %6.2fs", name, timings[name])

    log.info(
        "generating %d patients, seed %d, extract date %s, faults %.4f, %s",
        patients,
        seed,
        date_str,
        faults,
        fmt,
    )
    with stage("reference"):
        lsoas = load_lsoas(params["geography"]["lad19cd"])
        events.check_noise_codes(params)
    with stage("population"):
        pool = (
            int(patients * params["population"]["pool_factor"]) + params["population"]["pool_extra"]
        )
        dem = population.make_demography(rngs["demography"], pool, lsoas, params, E)
        rf = make_risk_factors(rngs["risk"], dem, params, E)
        cond = simulate_conditions(rngs["conditions"], dem, rf, params, E)
        fr = simulate_frailty(rngs["frailty"], dem, rf, cond, params, E)
        mid = E - 365
        death_rr = cond.active(mid).astype(np.float64) @ cond.death_rr
        status, end_day = population.mortality_and_leaving(
            rngs["mortality"], dem, death_rr, deficits_at(cond, fr, mid), params, E
        )
        keep = population.cut_pool(status, patients)
        dem, rf, cond, fr = dem.subset(keep), rf.subset(keep), cond.subset(keep), fr.subset(keep)
        status, end_day = status[keep], end_day[keep]
        pr = population.make_practices(rngs["practices"], patients, lsoas, params)
        practice_idx = population.choose_practice(rngs["practices"], pr, dem.lsoa)
        reg = population.make_registrations(
            rngs["registrations"], dem, status, end_day, practice_idx, len(pr.code), params, E
        )
        nhs = generate_nhs_numbers(rngs["nhs"], len(dem.dob), overflow=nhs_overflow)
        log.info(
            "people %d (current %d, left %d, died %d), practices %d, PCNs %d",
            len(dem.dob),
            int((status == population.CURRENT).sum()),
            int((status == population.LEFT).sum()),
            int((status == population.DIED).sum()),
            len(pr.code),
            pr.table["pcn_code"].n_unique(),
        )
    with stage("referrals"):
        # social prescribing referrals first: their peaks of need and the effect are laid
        # over the hospital and GP appointment processes (phm.synth.impact)
        eng = community.make_engagement(
            rngs["engagement"], params, dem, cond, reg, rf.engagement_z, E
        )
        carer = events.make_carers(rngs["carers"], params, dem, E)
        refs = community.make_referrals(
            rngs["referrals"], params, dem, cond, fr, reg, eng, carer, rf.bmi, E
        )
        sp_ex = impact.make_exposure(params, refs, len(dem.dob))
    with stage("hospital"):
        em_pid, em_day, truth, u_frail = hospital.emergency_admissions(
            rngs["emergency"], params, dem, cond, fr, reg, E, rngs["impact"], sp_ex
        )
        spells = hospital.make_spells(rngs["spells"], params, dem, cond, fr, reg, em_pid, em_day, E)
        spells = hospital.discharges(rngs["discharges"], params, dem, reg, spells, E)
        gp_death_missing = hospital.gp_death_lag(rngs["discharges"], params, reg, spells, E)
        secondary = hospital.secondary_diagnoses(
            rngs["diagnoses"], params, dem.sex, cond, fr, spells
        )
        forms = rngs["diagnoses"].choice(4, size=len(spells.pid), p=[0.45, 0.3, 0.12, 0.13])
        primary = icd10_messy(spells.primary, forms, set(params["emergency"]["asterisk_codes"]))
        ed = hospital.make_ecds(
            rngs["ecds"], params, dem, cond, reg, spells, u_frail, E, rngs["impact"], sp_ex
        )
    with stage("community"):
        op = hospital.make_outpatients(
            rngs["outpatients"], params, dem, cond, reg, eng.low, u_frail, E
        )
        ppn = community.make_ppn(rngs["ppn"], params, dem, cond, reg, eng, E)
        outcomes, score_truth = community.make_outcomes(rngs["outcomes"], params, dem, refs, E)
        book = events.CodeBook()
        invites, first_invite = events.make_invites(
            rngs["invites"], params, book, dem, cond, reg, eng, E
        )
        appts = community.make_appointments(
            rngs["appointments"],
            params,
            dem,
            cond,
            fr,
            reg,
            eng,
            refs,
            first_invite,
            u_frail,
            E,
            rngs["impact"],
            sp_ex,
        )
        ep = params["emergency"]["method_weights"]
        impact_truth = impact.impact_truth(
            sp_ex,
            refs,
            np.where(reg.status == population.CURRENT, E, reg.end),
            reg.death,
            E,
            float(ep["21"]) / sum(float(v) for v in ep.values()),
            score_truth,
            params,
        )
    with stage("gp_record"):
        ev = events.make_events(
            rngs["events"],
            params,
            book,
            dem,
            rf,
            cond,
            fr,
            reg,
            eng,
            appts,
            refs,
            ppn,
            carer,
            invites,
            E,
        )
        med = events.medication_table(params)
        md = events.make_medications(rngs["medications"], params, dem, cond, reg, E)
        assets = community.make_assets(rngs["assets"], params, lsoas, patients)
        lsoa21 = population.lsoa21_codes(rngs["lsoa21"], params, lsoas.code)
    with stage("tables"):
        ids = rngs["ids"]
        nhs_s = pl.Series("nhs_number", nhs.astype(object), dtype=pl.Utf8)
        pcodes = pr.code
        builders = {
            "practices": lambda: tables.finish("practices", pr.table),
            "gp_patients": lambda: tables.gp_patients(
                nhs_s, dem, lsoas.code, pcodes, reg, lsoa21, gp_death_missing
            ),
            "gp_events": lambda: tables.gp_events(nhs_s, book.codes, pcodes, reg.practice, *ev),
            "gp_medications": lambda: tables.gp_medications(ids, nhs_s, med, *md),
            "gp_appointments": lambda: tables.gp_appointments(nhs_s, pcodes, appts),
            "sus_apc": lambda: tables.sus_apc(ids, nhs_s, spells, primary, secondary),
            "sus_ecds": lambda: tables.sus_ecds(ids, nhs_s, ed),
            "sus_op": lambda: tables.sus_op(ids, nhs_s, op),
            "ppn": lambda: tables.ppn(ids, nhs_s, ppn),
        }
        frames: dict[str, pl.DataFrame] = {}
        for name, build in builders.items():
            t0 = time.perf_counter()
            frames[name] = build()
            log.debug("built %s in %.2fs", name, time.perf_counter() - t0)
        frames["sp_referrals"], ref_ids = tables.sp_referrals(ids, nhs_s, refs)
        frames["sp_outcomes"] = tables.sp_outcomes(ref_ids, outcomes)
        frames["community_assets"] = tables.community_assets(assets)
        current = reg.status == population.CURRENT
        v2_truth = _v2_truth(nhs, dem, reg, spells, lsoa21, gp_death_missing, E)
        truth_df = pl.DataFrame(
            {
                "nhs_number": nhs[current],
                "p_emergency_12m_before": truth.p_before[current],
                "p_emergency_12m_after": truth.p_after[current],
                "frailty_u": u_frail[current],
            }
        ).sort("nhs_number")
    fault_records: list[tuple] = []
    if faults > 0:
        with stage("faults"):
            with_outcomes = frames["sp_referrals"]["referral_id"].is_in(
                frames["sp_outcomes"]["referral_id"].implode()
            )
            ctx = _fault_context(frames, E, with_outcomes.to_numpy())
            for name in TABLE_NAMES:
                frames[name], recs = fault_injection.inject(
                    name, frames[name], faults, rngs["faults"], ctx
                )
                fault_records += recs
            log.info("faults injected: %d", len(fault_records))
    with stage("write"):
        delivery = out_root / date_str
        delivery.mkdir(parents=True, exist_ok=True)
        clear_delivery(delivery)
        side = sidecar_dir(out_root, date_str)
        side.mkdir(parents=True, exist_ok=True)
        # two writers at a time (gzip and parquet encoding of one file is mostly one core);
        # each file's bytes depend only on its frame, so the order of completion is irrelevant
        by_size = sorted(TABLE_NAMES, key=lambda t: -frames[t].height)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {t: pool.submit(write_table, frames[t], delivery, t, fmt) for t in by_size}
            files = {t: futures[t].result() for t in TABLE_NAMES}
        truth_path = side / "truth.parquet"
        truth_df.write_parquet(truth_path, compression="zstd", statistics=True)
        v2_truth.write_parquet(side / "v2_truth.parquet", compression="zstd", statistics=True)
        impact_path = side / "impact_truth.json"
        impact_path.write_text(json.dumps(impact_truth, indent=2, sort_keys=False) + "\n")
        faults_path = side / "faults.csv"
        if faults > 0:
            fault_injection.faults_frame(fault_records).write_csv(
                faults_path, line_terminator="\n", null_value=""
            )
        else:
            faults_path.unlink(missing_ok=True)
            faults_path = None
        rows = {name: frames[name].height for name in TABLE_NAMES}
    with stage("manifest"):
        write_manifest(delivery, date_str, files)
    timings["total"] = time.perf_counter() - t_all
    for name in TABLE_NAMES:
        log.info("table %-17s %10d rows", name, rows[name])
    log.info("done in %.1fs: %s", timings["total"], delivery)
    return GenerateResult(
        delivery=delivery,
        extract_date=extract_date,
        fmt=fmt,
        files=files,
        rows=rows,
        truth=truth_path,
        faults=faults_path,
        n_faults=len(fault_records),
        patients=patients,
        seed=seed,
        timings=timings,
    )


def _v2_truth(nhs, dem, reg, spells, lsoa21, gp_death_missing, extract_day) -> pl.DataFrame:
    """Per person with anything v2-specific (sidecar ``v2_truth.parquet``, never the delivery):
    died in hospital (last spell ``4``/``79``), the GP record not yet showing that death at the
    extract date, spells ending in a transfer, and a 2021-only LSOA code."""
    n = len(dem.dob)
    died_h = np.zeros(n, dtype=bool)
    died_h[spells.pid[spells.discharge_method == "4"]] = True
    transfers = np.bincount(
        spells.pid[np.isin(spells.kind, [5])], minlength=n
    )  # spells that are transfers in
    new21 = np.zeros(n, dtype=bool)
    has = dem.lsoa >= 0
    new21[has] = lsoa21.code21[dem.lsoa[has]] != lsoa21.code11[dem.lsoa[has]]
    keep = died_h | gp_death_missing | (transfers > 0) | new21
    idx = np.flatnonzero(keep)
    return pl.DataFrame(
        {
            "nhs_number": nhs[idx],
            "died_in_hospital": died_h[idx],
            "gp_date_of_death_missing": gp_death_missing[idx],
            "transfers_in": transfers[idx].astype(np.int32),
            "lsoa21_only_code": new21[idx],
        }
    ).sort("nhs_number")


def _fault_context(
    frames: dict[str, pl.DataFrame], extract_day: int, with_outcomes: np.ndarray
) -> fault_injection.Context:
    return fault_injection.Context(
        extract_day=extract_day,
        practice_codes=frames["practices"]["practice_code"].to_list(),
        pcn_codes=frames["practices"]["pcn_code"].unique(maintain_order=True).to_list(),
        referral_ids=set(frames["sp_referrals"]["referral_id"].to_list()),
        protected={"sp_referrals": with_outcomes},
    )
