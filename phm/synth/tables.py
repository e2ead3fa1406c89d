"""Turn the simulated arrays into the twelve contract tables (typed polars frames, columns in
contract order, rows in a deterministic order)."""

from __future__ import annotations

import numpy as np
import polars as pl

from phm.contract import TABLES
from phm.synth._util import NEVER


def _date(days: np.ndarray, null_below: int | None = None, null_at: int | None = None) -> pl.Series:
    s = pl.Series(np.asarray(days, dtype=np.int32)).cast(pl.Date)
    mask = np.zeros(len(days), dtype=bool)
    if null_below is not None:
        mask |= np.asarray(days) < null_below
    if null_at is not None:
        mask |= np.asarray(days) >= null_at
    if mask.any():
        s = pl.select(pl.when(pl.Series(mask)).then(None).otherwise(s)).to_series()
    return s


def _str(values: np.ndarray) -> pl.Series:
    """numpy strings -> polars (via object arrays: much faster than from fixed-width unicode)."""
    return pl.Series(np.asarray(values).astype(object), dtype=pl.Utf8)


def _str_or_null(values: np.ndarray) -> pl.Series:
    s = _str(values)
    return pl.select(pl.when(s == "").then(None).otherwise(s)).to_series()


def _cat(keys: list[str], idx: np.ndarray) -> pl.Series:
    """Strings from category indices (-1 = null)."""
    idx = np.asarray(idx, dtype=np.int64)
    return pl.Series([*keys, None], dtype=pl.Utf8).gather(np.where(idx < 0, len(keys), idx))


def _ids(prefix: str, start: int, n: int, width: int) -> pl.Series:
    return pl.select(
        (
            pl.lit(prefix)
            + (pl.int_range(0, n, eager=False) + start).cast(pl.Utf8).str.zfill(width)
        ).alias("id")
    ).to_series()


def finish(name: str, df: pl.DataFrame) -> pl.DataFrame:
    """Columns in contract order, contract types."""
    cols = TABLES[name].columns
    exprs = []
    for c in cols:
        e = pl.col(c.name)
        if c.type == "str":
            e = e.cast(pl.Utf8)
        elif c.type == "float":
            e = e.cast(pl.Float64)
        elif c.type == "int":
            e = e.cast(pl.Int64)
        elif c.type == "bool":
            e = e.cast(pl.Boolean)
        elif c.type == "date":
            e = e.cast(pl.Date)
        elif c.type == "datetime":
            e = e.cast(pl.Datetime("us"))
        exprs.append(e)
    return df.select(exprs)


def gp_patients(
    nhs_s: pl.Series, dem, lsoa_codes, practice_codes, reg, lsoa21, death_missing
) -> pl.DataFrame:
    """Registrations; ``lsoa21`` (:class:`population.Lsoa21`) gives the v2 ``lsoa21_code``;
    ``death_missing`` marks people whose death is not yet in the GP record (date_of_death and
    registration_end still empty)."""
    from phm.synth.population import lsoa21_of_people

    n = len(nhs_s)
    pcodes = list(practice_codes)
    lsoa = np.where(dem.lsoa >= 0, lsoa_codes[np.maximum(dem.lsoa, 0)], "")
    lsoa21_code = lsoa21_of_people(lsoa21, dem.lsoa, np.arange(n))
    end = np.where(death_missing, NEVER, reg.end)
    death = np.where(death_missing, NEVER, reg.death)
    main = pl.DataFrame(
        {
            "nhs_number": nhs_s,
            "date_of_birth": _date(dem.dob),
            "sex": _str(dem.sex),
            "ethnic_category": _str_or_null(dem.ethnicity),
            "lsoa11_code": _str_or_null(lsoa),
            "lsoa21_code": _str_or_null(lsoa21_code),
            "practice_code": _cat(pcodes, reg.practice),
            "registration_start": _date(reg.start),
            "registration_end": _date(end, null_at=int(NEVER)),
            "date_of_death": _date(death, null_at=int(NEVER)),
            "_pid": np.arange(n),
        }
    )
    t = np.flatnonzero(reg.prev_practice >= 0)
    prev = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(t),
            "date_of_birth": _date(dem.dob[t]),
            "sex": _str(dem.sex[t]),
            "ethnic_category": _str_or_null(dem.ethnicity[t]),
            "lsoa11_code": _str_or_null(lsoa[t]),
            "lsoa21_code": _str_or_null(lsoa21_code[t]),
            "practice_code": _cat(pcodes, reg.prev_practice[t]),
            "registration_start": _date(reg.prev_start[t]),
            "registration_end": _date(reg.prev_end[t]),
            "date_of_death": _date(np.full(len(t), NEVER), null_at=int(NEVER)),
            "_pid": t,
        }
    )
    df = pl.concat([main, prev]).sort(
        ["practice_code", "registration_start", "nhs_number"], maintain_order=True
    )
    return finish("gp_patients", df)


def gp_events(
    nhs_s: pl.Series,
    codes: list[str],
    practice_codes: np.ndarray,
    practice_idx: np.ndarray,
    pid,
    day,
    code,
    value,
) -> pl.DataFrame:
    # one int64 sort key: person, day (< 2**16 days after 1970), code id (< 2**16)
    if len(codes) >= 2**16 or (len(day) and int(day.max()) >= 2**16):
        raise ValueError("event sort key out of range")
    key = (pid.astype(np.int64) << 32) | (day.astype(np.int64) << 16) | code.astype(np.int64)
    df = pl.DataFrame(
        {"key": key, "pid": pid, "day": day, "code": code, "value": value}
    ).with_columns(pl.col("value").fill_nan(None))
    df = df.sort(["key", "value"], nulls_last=False, maintain_order=True)
    p = df["pid"].to_numpy()
    out = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(p),
            "event_date": df["day"].cast(pl.Int32).cast(pl.Date),
            "snomed_code": pl.Series(codes, dtype=pl.Utf8).gather(df["code"]),
            "numeric_value": df["value"],
            "practice_code": _cat(list(practice_codes), practice_idx[p]),
        }
    )
    return finish("gp_events", out)


def gp_medications(rng: np.random.Generator, nhs_s: pl.Series, med, pid, day, midx) -> pl.DataFrame:
    df = pl.DataFrame({"pid": pid, "day": day, "m": midx.astype(np.int32)}).sort(
        ["pid", "day", "m"], maintain_order=True
    )
    m = df["m"].to_numpy()
    qty = med.qty[m].copy()
    qty[rng.random(len(qty)) < 0.01] = np.nan
    out = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(df["pid"]),
            "issue_date": df["day"].cast(pl.Int32).cast(pl.Date),
            "dmd_code": pl.Series(med.dmd).gather(m),
            "bnf_code": pl.Series(med.bnf).gather(m),
            "quantity": pl.Series(qty).fill_nan(None),
        }
    )
    return finish("gp_medications", out)


def gp_appointments(nhs_s: pl.Series, practice_codes: np.ndarray, ap) -> pl.DataFrame:
    from phm.synth.community import APPT_STATUS, MODES, ROLES

    out = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(ap.pid),
            "appointment_date": pl.Series(ap.day.astype(np.int32)).cast(pl.Date),
            "status": _cat(APPT_STATUS, ap.status),
            "staff_role": _cat(ROLES, ap.role),
            "mode": _cat(MODES, ap.mode),
            "practice_code": _cat(list(practice_codes), ap.practice),
        }
    )
    return finish("gp_appointments", out)


def sus_apc(
    rng: np.random.Generator, nhs_s: pl.Series, sp, primary_messy, secondary
) -> pl.DataFrame:
    order = np.lexsort((sp.pid, sp.admission))
    n = len(order)
    start = int(rng.integers(100_000_000_000, 200_000_000_000))
    out = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(sp.pid[order]),
            "spell_id": _ids("", start, n, 12),
            "provider_code": _str(sp.provider[order]),
            "admission_date": _date(sp.admission[order]),
            "discharge_date": _date(sp.discharge[order], null_below=0),
            "admission_method": _str(sp.method[order]),
            "discharge_method": _str(sp.discharge_method[order]),
            "discharge_destination": _str(sp.discharge_destination[order]),
            "primary_diagnosis": _str(primary_messy[order]),
            "secondary_diagnoses": _str_or_null(secondary[order]),
        }
    )
    return finish("sus_apc", out)


def sus_ecds(rng: np.random.Generator, nhs_s: pl.Series, ed) -> pl.DataFrame:
    order = np.lexsort((ed.pid, ed.arrival_s))
    n = len(order)
    start = int(rng.integers(10_000_000, 20_000_000))
    out = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(ed.pid[order]),
            "attendance_id": _ids("ED", start, n, 9),
            "provider_code": _cat(ed.provider_keys, ed.provider[order]),
            "arrival_datetime": pl.from_epoch(
                pl.Series(ed.arrival_s[order].astype(np.int64)), time_unit="s"
            ),
            "department_type": _cat(ed.department_keys, ed.department[order]),
            "chief_complaint_snomed": _cat(ed.complaint_keys, ed.complaint[order]),
            "admitted": ed.admitted[order],
        }
    )
    return finish("sus_ecds", out)


def sus_op(rng: np.random.Generator, nhs_s: pl.Series, op) -> pl.DataFrame:
    order = np.lexsort((op.pid, op.day))
    n = len(order)
    start = int(rng.integers(10_000_000, 20_000_000))
    out = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(op.pid[order]),
            "appointment_id": _ids("OP", start, n, 10),
            "appointment_date": _date(op.day[order]),
            "attendance_status": _str(op.status[order]),
            "treatment_function_code": _str(op.tfc[order]),
        }
    )
    return finish("sus_op", out)


def ppn(rng: np.random.Generator, nhs_s: pl.Series, p) -> pl.DataFrame:
    order = np.lexsort((p.pid, p.incident, p.shared))
    n = len(order)
    start = int(rng.integers(1_000_000, 2_000_000))
    out = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(p.pid[order]),
            "ppn_id": _ids("PPN", start, n, 7),
            "incident_date": _date(p.incident[order]),
            "shared_date": _date(p.shared[order]),
            "category": _str(p.category[order]),
            "risk_level": _str(p.risk[order]),
        }
    )
    return finish("ppn", out)


def sp_referrals(rng: np.random.Generator, nhs_s: pl.Series, r) -> tuple[pl.DataFrame, np.ndarray]:
    """The table and, per referral (in the arrays' order), its referral_id."""
    order = np.lexsort((r.pid, r.referral))
    n = len(order)
    start = int(rng.integers(100_000, 200_000))
    ids = _ids("SPR", start, n, 7)
    out = pl.DataFrame(
        {
            "nhs_number": nhs_s.gather(r.pid[order]),
            "referral_id": ids,
            "referral_date": _date(r.referral[order]),
            "source": _str(r.source[order]),
            "reasons": _str(r.reasons[order]),
            "contact_attempts": r.attempts[order],
            "first_contact_date": _date(r.first_contact[order], null_below=0),
            "status": _str(r.status[order]),
            "discharge_date": _date(r.discharge[order], null_below=0),
        }
    )
    id_of = np.empty(n, dtype=object)
    id_of[order] = ids.to_numpy()
    return finish("sp_referrals", out), id_of


def sp_outcomes(ref_ids: np.ndarray, o) -> pl.DataFrame:
    out = pl.DataFrame(
        {
            "referral_id": _str(ref_ids[o.ref_index]),
            "measure": _str(o.measure),
            "timepoint": _str(o.timepoint),
            "score": o.score,
            "recorded_date": _date(o.recorded),
        }
    ).sort(["referral_id", "timepoint", "measure"], maintain_order=True)
    return finish("sp_outcomes", out)


def community_assets(a) -> pl.DataFrame:
    out = pl.DataFrame(
        {
            "asset_id": a.asset_id,
            "name": _str(a.name),
            "category": a.category,
            "latitude": a.lat,
            "longitude": a.lon,
            "lsoa11_code": a.lsoa,
        }
    )
    return finish("community_assets", out)
