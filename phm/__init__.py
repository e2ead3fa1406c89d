"""Domain code of the PHM pipeline: no Dagster here.

Contract and delivery reading (:mod:`phm.contract`, :mod:`phm.delivery`, :mod:`phm.ingest`,
:mod:`phm.validate`), the warehouse (:mod:`phm.warehouse`), code checks and code lists
(:mod:`phm.codes`, :mod:`phm.codelists`), the one rule language (:mod:`phm.definitions`),
clinical measures (:mod:`phm.measures`), cohorts (:mod:`phm.cohorts`), impact
(:mod:`phm.impact`), exports, pseudonymisation and disclosure control. The synthetic
generator (:mod:`phm.synth`) is a subpackage that no other domain module imports.
"""
