"""Impact and caseload: what social prescribing and proactive care did, measured honestly.

Modules (pure functions over a DuckDB connection or numpy/polars data):

- :mod:`phm.impact.interventions`: treated sets and monthly service-use panels;
- :mod:`phm.impact.matching`: risk-set matching on the pre-period trajectory;
- :mod:`phm.impact.estimates`: naive before/after, matched difference-in-differences, balance;
- :mod:`phm.impact.outcomes`: paired change in outcome scores (ONS4, UCLA-3, SWEMWBS);
- :mod:`phm.impact.caseload`: caseload counts per PCN and month, outreach funnels;
- :mod:`phm.impact.report`: the per-PCN self-contained HTML report and CSVs;
- :mod:`phm.impact.pipeline`: the stage end to end (what the Dagster assets call).

Methods, rules and citations: docs/impact.md.
"""
