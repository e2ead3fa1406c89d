"""The definitions layer: loader errors name the file and field; the compiler's known answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
import yaml

from phm.cohorts import load_cohorts
from phm.definitions import (
    DefinitionError,
    RuleCompiler,
    load_events,
    parse_rule,
    table_columns_of,
)
from phm.prevalences import load_prevalences

ED = dt.date(2026, 11, 1)
FILE = Path("rules.yaml")


def _events(tmp_path: Path, events: dict) -> dict:
    path = tmp_path / "events.yaml"
    path.write_text(yaml.safe_dump({"events": events}), encoding="utf-8")
    return load_events(path)


VISIT = {"description": "a visit", "table": "staging.visits", "date": "visit_date"}


@pytest.fixture()
def con():
    c = duckdb.connect()
    c.execute("CREATE SCHEMA staging; CREATE SCHEMA marts; CREATE SCHEMA reference")
    c.execute(
        """CREATE TABLE pop AS SELECT * FROM (VALUES
            ('a', 64, 'moderate', TRUE,  'housebound;falls', 'O''Brien'),
            ('b', 65, 'severe',   FALSE, NULL,               'Smith'),
            ('c', 80, NULL,       NULL,  'falls',            NULL),
            ('d', 18, 'fit',      TRUE,  'requirement_for_care', 'Jones'))
           t(person_id, age, efi_category, flag, deficits, surname)"""
    )
    c.execute(
        """CREATE TABLE marts.person_identity AS SELECT * FROM (VALUES
            ('n1', 'a'), ('n2', 'b'), ('n3', 'c'), ('n4', 'd')) t(nhs_number, person_id)"""
    )
    c.execute(
        """CREATE TABLE staging.visits AS SELECT nhs_number, CAST(d AS DATE) AS visit_date,
                  status, snomed_code FROM (VALUES
            ('n1', '2026-11-01', 'attended', '111'),
            ('n1', '2026-10-26', 'attended', '222'),
            ('n2', '2026-10-25', 'attended', '111'),
            ('n2', '2026-11-02', 'attended', '111'),
            ('n3', '2026-10-30', 'missed',   '111'),
            ('n3', NULL,         'attended', '111'),
            ('n4', '2020-01-01', 'attended', '222')) t(nhs_number, d, status, snomed_code)"""
    )
    c.execute(
        "CREATE TABLE reference.codelists AS SELECT * FROM (VALUES ('visit_codes', '111')) "
        "t(codelist_id, code)"
    )
    yield c
    c.close()


def _members(con, rule_yaml: str, events=None) -> dict[str, str]:
    """person_id -> reasons of everyone meeting the rule."""
    rule = parse_rule(yaml.safe_load(rule_yaml), FILE, "criteria", events=events or {})
    cols = {r[0] for r in con.execute("DESCRIBE pop").fetchall()}
    c = RuleCompiler(cols, events=events, extract_date=ED, table_columns=table_columns_of(con))
    cond = c.condition(rule)
    rows = con.execute(
        f"{c.with_clause()} SELECT pm.person_id, {c.reasons_sql()} FROM pop pm "
        f"{c.join_clause()} WHERE {cond} ORDER BY 1"
    ).fetchall()
    return dict(rows)


# ------------------------------------------------------------------ loader errors


@pytest.mark.parametrize(
    ("node", "field", "problem"),
    [
        ({"measure": "age", "op": "gte", "value": 3}, "criteria.op", "unknown operator 'gte'"),
        (
            {"measure": "age; DROP TABLE pop", "op": "=", "value": 1},
            "criteria.measure",
            "must be lower_snake_case",
        ),
        ("age >= 65 AND efi_category = 'severe'", "criteria", "must be a rule"),
        ({"event": "nope"}, "criteria.event", "unknown event 'nope'"),
        ({"cohort": "frailty"}, "criteria.cohort", "cohort rules are not allowed here"),
        ({"measure": "age", "op": "between", "value": [1]}, "criteria.value", "between needs"),
        ({"measure": "age", "op": "=", "value": {"sql": "1"}}, "criteria.value", "= needs one"),
        ({"all": []}, "criteria.all", "must be a non-empty list"),
        ({"not": {"measure": "flag", "op": "is_true"}}, "criteria.reason", "is required"),
        ({"measure": "age", "op": "=", "value": 1, "sql": "x"}, "criteria.sql", "unknown field"),
        ({"everyone": "yes"}, "criteria.everyone", "must be true"),
    ],
)
def test_malformed_rule_names_file_and_field(node, field, problem):
    with pytest.raises(DefinitionError) as e:
        parse_rule(node, FILE, "criteria", events={})
    assert str(e.value).startswith(f"{FILE}: {field}: {problem}")


def test_sql_text_in_an_event_filter_is_rejected(tmp_path):
    with pytest.raises(DefinitionError) as e:
        _events(tmp_path, {"visit": {**VISIT, "where": "status = 'attended'"}})
    assert str(e.value).startswith(f"{tmp_path / 'events.yaml'}: events.visit.where: must be")
    assert "not text" in str(e.value)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**VISIT, "table": "visits; DROP TABLE pop"}, "events.visit.table"),
        ({**VISIT, "date": "cast(visit_date)"}, "events.visit.date"),
        ({**VISIT, "codelists": ["a b"]}, "events.visit.codelists"),
        ({k: v for k, v in VISIT.items() if k != "date"}, "events.visit.date"),
    ],
)
def test_malformed_event_names_file_and_field(tmp_path, spec, field):
    with pytest.raises(DefinitionError) as e:
        _events(tmp_path, {"visit": spec})
    assert str(e.value).startswith(f"{tmp_path / 'events.yaml'}: {field}: ")


def test_unknown_columns_are_reported_at_compile_time(con, tmp_path):
    with pytest.raises(DefinitionError, match=r"rules\.yaml: criteria\.measure: unknown column"):
        _members(con, "{measure: agee, op: '>', value: 1}")
    with pytest.raises(DefinitionError, match=r"rules\.yaml: criteria\.reason: unknown column"):
        _members(con, "{measure: age, op: '>', value: 1, reason: 'aged {agee}'}")
    events = _events(
        tmp_path, {"visit": {**VISIT, "where": {"column": "state", "op": "=", "value": "x"}}}
    )
    with pytest.raises(
        DefinitionError,
        match=r"events\.yaml: events\.visit\.where\.column: unknown column 'state' "
        r"\(not in staging\.visits\)",
    ):
        _members(con, "{event: visit}", events)
    events = _events(tmp_path, {"visit": {**VISIT, "table": "staging.nope"}})
    with pytest.raises(DefinitionError, match=r"events\.visit\.table: table staging\.nope"):
        _members(con, "{event: visit}", events)


# ------------------------------------------------------------------ compiler


def test_value_operators_known_answers(con):
    assert set(_members(con, "{measure: age, op: between, value: [64, 65]}")) == {"a", "b"}
    assert set(_members(con, "{measure: efi_category, op: in, value: [moderate, severe]}")) == {
        "a",
        "b",
    }
    # a missing value meets no comparison, not even not_in
    assert set(_members(con, "{measure: efi_category, op: not_in, value: [fit]}")) == {"a", "b"}
    assert set(_members(con, "{measure: flag, op: is_true}")) == {"a", "d"}
    assert set(_members(con, "{measure: flag, op: is_false}")) == {"b", "c"}
    assert set(
        _members(
            con, "{measure: deficits, op: includes_any, value: [housebound, requirement_for_care]}"
        )
    ) == {"a", "d"}
    assert set(_members(con, "{measure: age, op: '!=', value: 80}")) == {"a", "b", "d"}
    assert set(_members(con, "{everyone: true}")) == {"a", "b", "c", "d"}


def test_values_are_literals_never_sql(con):
    assert set(_members(con, "{measure: surname, op: '=', value: \"O'Brien\"}")) == {"a"}
    attack = "x' OR TRUE OR surname = 'y"
    assert _members(con, f"{{measure: surname, op: '=', value: \"{attack}\"}}") == {}
    assert con.execute("SELECT count(*) FROM pop").fetchone()[0] == 4


def test_reasons_follow_the_tree_and_not_rules(con):
    got = _members(
        con,
        """
        all:
          - {measure: age, op: '>=', value: 60, reason: "age {age}"}
          - not: {measure: flag, op: is_true, reason: never shown}
            reason: no flag
          - any:
              - {measure: efi_category, op: '=', value: severe, reason: "eFI {efi_category}"}
              - {measure: surname, op: '=', value: Smith, reason: "surname {surname}"}
              - {measure: efi_category, op: '=', value: moderate, reason: "eFI {efi_category}"}
        """,
    )
    assert got == {"b": "age 65; no flag; eFI severe; surname Smith"}
    # a null placeholder reads "unknown"
    assert _members(con, "{measure: age, op: '=', value: 80, reason: 'eFI {efi_category}'}") == {
        "c": "eFI unknown"
    }


def test_events_window_filter_codelists_and_count(con, tmp_path):
    events = _events(
        tmp_path,
        {
            "visit": VISIT,
            "attended": {**VISIT, "where": {"column": "status", "op": "=", "value": "attended"}},
            "coded": {**VISIT, "codelists": ["visit_codes"]},
        },
    )
    # 7 days ending on the extract date: 2026-10-26 .. 2026-11-01; later and undated rows never
    assert _members(
        con,
        "{event: visit, within_days: 7, reason: '{count} visit(s), latest {latest_date}'}",
        events,
    ) == {"a": "2 visit(s), latest 2026-11-01", "c": "1 visit(s), latest 2026-10-30"}
    assert set(_members(con, "{event: visit, within_days: 6}", events)) == {"a", "c"}
    assert _members(con, "{event: visit, within_days: 6, reason: '{count}'}", events)["a"] == "1"
    assert set(_members(con, "{event: attended, within_days: 7}", events)) == {"a"}
    assert set(_members(con, "{event: attended}", events)) == {"a", "b", "d"}
    assert set(_members(con, "{event: coded}", events)) == {"a", "b", "c"}
    assert set(_members(con, "{event: visit, min_count: 2}", events)) == {"a"}
    assert (
        _members(con, "{event: visit, within_days: 7, reason: '{days_ago} days ago'}", events)["c"]
        == "2 days ago"
    )


def test_the_map_frailty_is_the_frailty_cohort():
    frailty = {c.id: c for c in load_cohorts()}["frailty"]
    prev = {p.id: p for p in load_prevalences()}["frailty"]
    assert prev.numerator.kind == "cohort"
    assert prev.numerator.children == [frailty.criteria]


def test_event_count_per_calendar_month(con, tmp_path):
    events = _events(tmp_path, {"visit": VISIT})
    # a: two visits, one in October and one in November; b's November visit is after the date
    assert set(_members(con, "{event: visit, min_count: 2}", events)) == {"a"}
    assert _members(con, "{event: visit, min_count: 2, per: calendar_month}", events) == {}
    got = _members(con, "{event: visit, per: calendar_month, reason: '{count} in {month}'}", events)
    assert got == {
        "a": "1 in 2026-11",
        "b": "1 in 2026-10",
        "c": "1 in 2026-10",
        "d": "1 in 2020-01",
    }


def test_latest_of_and_latest_column(con, tmp_path):
    events = _events(
        tmp_path,
        {
            "attended": {
                **VISIT,
                "label": "an attended visit",
                "where": {"column": "status", "op": "=", "value": "attended"},
            },
            "coded": {**VISIT, "codelists": ["visit_codes"]},
        },
    )
    # a and b have both on their latest day: the event later in the list wins the tie
    assert _members(
        con, "{latest_of: [attended, coded], is: [coded], reason: '{latest_label}'}", events
    ) == {"a": "coded", "b": "coded", "c": "coded"}
    assert _members(
        con,
        "{latest_of: [coded, attended], is: [attended], reason: '{latest_label} {latest_date}'}",
        events,
    ) == {
        "a": "an attended visit 2026-11-01",
        "b": "an attended visit 2026-10-25",
        "d": "an attended visit 2020-01-01",
    }
    assert set(
        _members(con, "{latest_of: [coded, attended], is: [attended], within_days: 30}", events)
    ) == {"a", "b"}
    visit = _events(tmp_path, {"visit": VISIT})
    assert _members(con, "{event: visit, reason: '{latest.status}'}", visit) == {
        "a": "attended",
        "b": "attended",
        "c": "missed",
        "d": "attended",
    }


@pytest.mark.parametrize(
    ("node", "field", "problem"),
    [
        ({"event": "visit", "per": "week"}, "criteria.per", "unknown period 'week'"),
        (
            {"latest_of": ["visit", "nope"], "is": ["visit"]},
            "criteria.latest_of[1]",
            "unknown event",
        ),
        ({"latest_of": ["visit"], "is": []}, "criteria.is", "must be a non-empty list"),
        ({"latest_of": ["visit"], "is": ["other"]}, "criteria.is", "'other' is not in latest_of"),
        (
            {"latest_of": ["visit"], "is": ["visit"], "min_count": 2},
            "criteria.min_count",
            "unknown",
        ),
    ],
)
def test_malformed_event_extensions(tmp_path, node, field, problem):
    events = _events(tmp_path, {"visit": VISIT, "other": VISIT})
    with pytest.raises(DefinitionError) as e:
        parse_rule(node, FILE, "criteria", events=events)
    assert str(e.value).startswith(f"{FILE}: {field}: {problem}")
