"""Orchestration: Dagster assets, checks, resources, jobs and schedules
(:mod:`pipelines.definitions`), the ``phm`` command (:mod:`pipelines.cli`), the in-process
runner (:mod:`pipelines.runner`) and the benchmark (:mod:`pipelines.bench`)."""
