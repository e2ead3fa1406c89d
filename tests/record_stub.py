"""Empty record tables for hand-made marts-only warehouses (geography and disclosure tests).

The map's frailty prevalence is the frailty cohort's rule, which reads coded frailty events
(staging.gp_events through marts.person_identity and reference.codelists) as of the extract
date of the delivery in raw._delivery. A warehouse made of marts tables alone gets those
tables empty, so the coded arm matches nobody and the other arms read the marts as before."""

from __future__ import annotations

import datetime as dt

import duckdb


def add_empty_record(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> None:
    for schema in ("raw", "staging", "marts", "reference"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute(
        "CREATE OR REPLACE TABLE raw._delivery AS SELECT ?::DATE AS extract_date", [extract_date]
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS staging.gp_events "
        "(nhs_number VARCHAR, event_date DATE, snomed_code VARCHAR)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS marts.person_identity (person_id VARCHAR, nhs_number VARCHAR)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS reference.codelists (codelist_id VARCHAR, code VARCHAR)"
    )
