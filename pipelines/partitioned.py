"""The scale-out path: each PCN's files as a Dagster partition, run in parallel processes.

Job ``phm_pcn_outputs`` has five assets partitioned by PCN (dynamic partitions ``pcn``):
``exports/by_pcn/exports`` (cohort lists, risk register, cohorts.xlsx, manifest.json),
``exports/by_pcn/segments`` (segments.csv, population_pyramid.png), ``exports/by_pcn/maps``
(need_by_lsoa.gpkg and maps/), ``exports/by_pcn/impact_report`` (impact_report.html and its
CSVs) and ``exports/by_pcn/trends`` (trends.png), the last two added to the manifest one after
the other. They write the same bytes as the nightly job's ``exports/pcn_exports``,
``exports/segment_outputs``, ``exports/pcn_maps``, ``exports/impact_reports`` and
``reports/delivery_history`` (its trends.png) for that PCN, from the home's promoted warehouse opened **read-only**: they write files,
never the warehouse, so any number of processes can run them at once (DuckDB allows many
read-only processes when no process holds the file for writing). The warehouse holds one
delivery (the last run), not one chosen by partition key, so these assets depend on all
``delivery`` partitions of the nightly assets they read (``AllPartitionMapping``).

The job's executor is Dagster's ``multiprocess_executor`` (each step in its own process, at
most two at a time by default). One run is one PCN; :func:`run_pcn_outputs` registers the
PCN keys from the warehouse and launches the PCN runs, ``parallel`` at a time. It holds the
home's lock (:func:`phm.runhome.home_lock`) for the whole time in the launching process, so
no nightly run promotes a new warehouse under the readers; the step processes never take
the lock (it is not re-entrant across processes, and they do not need it: they only read).

ICB: one home (one warehouse file) per ICB, each its own ``phm run``; see docs/scaling.md.
"""

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from geo.maps import write_pcn_maps
from geo.need import published_table, write_need_geopackages
from phm.exports import export_pcns
from phm.history import write_trend_charts
from phm.impact.pipeline import write_impact_exports
from phm.paths import exports_dir, warehouse_path
from phm.runhome import home_lock
from phm.warehouse import current_extract_date, session
from segmentation.report import write_pcn_outputs

PCN_JOB = "phm_pcn_outputs"
GROUP = "pcn_outputs"
PCN_PARTITIONS = dg.DynamicPartitionsDefinition(name="pcn")
#: steps of one PCN run at once, each in its own process (the impact report follows exports)
MAX_CONCURRENT_STEPS = 2


class ReadOnlyWarehouse(dg.ConfigurableResource):
    """The home's promoted warehouse, opened read-only; takes no lock (the launcher holds it)."""

    database: str

    @contextmanager
    def get_connection(self) -> Iterator:
        with session(self.database, read_only=True) as con:
            yield con


class PcnOutputFolder(dg.ConfigurableResource):
    """Where the PCN files go: ``<root>/exports/<extract_date>/<pcn_code>/`` (root: the home)."""

    root: str

    def exports(self, extract_date: str) -> Path:
        path = exports_dir(Path(self.root), extract_date)
        path.mkdir(parents=True, exist_ok=True)
        return path


def _from_warehouse(*keys: dg.AssetKey) -> list[dg.AssetDep]:
    """Deps on nightly assets (partitioned by delivery): a PCN partition reads whichever
    delivery the promoted warehouse holds, not one chosen by partition key, so it depends on
    the delivery partitions as a whole (``AllPartitionMapping``), not on a mapped one."""
    return [dg.AssetDep(k, partition_mapping=dg.AllPartitionMapping()) for k in keys]


_MARTS = _from_warehouse(
    dg.AssetKey(["marts", "cohort_members"]), dg.AssetKey(["marts", "patient_measures"])
)


@dg.asset(
    key=["exports", "by_pcn", "exports"],
    group_name=GROUP,
    partitions_def=PCN_PARTITIONS,
    deps=_MARTS,
    kinds={"csv", "xlsx"},
    description="One PCN's cohort lists, risk register, cohorts.xlsx and manifest.json "
    "(as exports/pcn_exports writes them). For direct care: these files carry NHS numbers.",
)
def pcn_partition_exports(
    context: dg.AssetExecutionContext, pcn_output: PcnOutputFolder, warehouse_ro: ReadOnlyWarehouse
) -> dg.MaterializeResult:
    pcn = context.partition_key
    with warehouse_ro.get_connection() as con:
        extract_date = current_extract_date(con)
        out = pcn_output.exports(extract_date.isoformat())
        written = export_pcns(con, out, extract_date, pcn_codes=[pcn])
    if pcn not in written:
        raise ValueError(f"PCN {pcn} has no registered patients in this delivery")
    return dg.MaterializeResult(metadata={"files": len(written[pcn]) + 1})


@dg.asset(
    key=["exports", "by_pcn", "maps"],
    group_name=GROUP,
    partitions_def=PCN_PARTITIONS,
    deps=_from_warehouse(
        dg.AssetKey(published_table("lsoa").split(".")),
        dg.AssetKey(published_table("msoa").split(".")),
        dg.AssetKey(published_table("imd_decile").split(".")),
        dg.AssetKey(["marts", "patient_measures"]),
        dg.AssetKey(["staging", "community_assets"]),
    ),
    kinds={"geopackage", "html", "png"},
    description="One PCN's need_by_lsoa.gpkg and maps/ (as exports/pcn_maps writes them).",
)
def pcn_partition_maps(
    context: dg.AssetExecutionContext, pcn_output: PcnOutputFolder, warehouse_ro: ReadOnlyWarehouse
) -> dg.MaterializeResult:
    from pipelines.assets.geo import GAP_DISTANCE_M

    pcn = context.partition_key
    with warehouse_ro.get_connection() as con:
        extract_date = current_extract_date(con)
        out = pcn_output.exports(extract_date.isoformat())
        published = con.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
        write_need_geopackages(published, out, pcn_codes=[pcn])
        maps = write_pcn_maps(con, out, pcn_codes=[pcn], distance_threshold_m=GAP_DISTANCE_M)
    return dg.MaterializeResult(metadata={"map_files": len(maps.get(pcn, []))})


@dg.asset(
    key=["exports", "by_pcn", "impact_report"],
    group_name=GROUP,
    partitions_def=PCN_PARTITIONS,
    deps=[
        *_from_warehouse(
            dg.AssetKey(["marts", "impact_estimates"]),
            dg.AssetKey(["marts", "impact_outcome_scores"]),
            dg.AssetKey(["marts", "caseload_monthly"]),
        ),
        dg.AssetKey(["exports", "by_pcn", "exports"]),  # adds its files to the PCN's manifest.json
    ],
    kinds={"html", "csv"},
    description="One PCN's impact_report.html and CSVs (as exports/impact_reports writes them).",
)
def pcn_partition_impact_report(
    context: dg.AssetExecutionContext, pcn_output: PcnOutputFolder, warehouse_ro: ReadOnlyWarehouse
) -> dg.MaterializeResult:
    pcn = context.partition_key
    with warehouse_ro.get_connection() as con:
        extract_date = current_extract_date(con)
        out = pcn_output.exports(extract_date.isoformat())
        written = write_impact_exports(con, out, extract_date, pcn_codes=[pcn])
    return dg.MaterializeResult(metadata={"files": len(written.get(pcn, []))})


@dg.asset(
    key=["exports", "by_pcn", "segments"],
    group_name=GROUP,
    partitions_def=PCN_PARTITIONS,
    deps=_from_warehouse(dg.AssetKey(["marts", "segments"]), dg.AssetKey(["marts", "risk_scores"])),
    kinds={"csv", "png"},
    description="One PCN's segments.csv and population_pyramid.png "
    "(as exports/segment_outputs writes them).",
)
def pcn_partition_segments(
    context: dg.AssetExecutionContext, pcn_output: PcnOutputFolder, warehouse_ro: ReadOnlyWarehouse
) -> dg.MaterializeResult:
    pcn = context.partition_key
    with warehouse_ro.get_connection() as con:
        extract_date = current_extract_date(con)
        out = pcn_output.exports(extract_date.isoformat())
        written = write_pcn_outputs(con, out, pcn_codes=[pcn])
    return dg.MaterializeResult(metadata={"files": len(written.get(pcn, []))})


@dg.asset(
    key=["exports", "by_pcn", "trends"],
    group_name=GROUP,
    partitions_def=PCN_PARTITIONS,
    deps=[
        *_from_warehouse(dg.AssetKey(["reports", "cohort_size_history"])),
        # after the impact report: both add to the PCN's manifest.json (read-modify-write),
        # so they must not run at the same time
        dg.AssetKey(["exports", "by_pcn", "impact_report"]),
    ],
    kinds={"png"},
    description="One PCN's trends.png (as reports/delivery_history writes it).",
)
def pcn_partition_trends(
    context: dg.AssetExecutionContext, pcn_output: PcnOutputFolder, warehouse_ro: ReadOnlyWarehouse
) -> dg.MaterializeResult:
    pcn = context.partition_key
    with warehouse_ro.get_connection() as con:
        extract_date = current_extract_date(con)
        out = pcn_output.exports(extract_date.isoformat())
        written = write_trend_charts(con, out, extract_date, pcn_codes=[pcn])
    return dg.MaterializeResult(metadata={"files": len(written)})


ASSETS = [
    pcn_partition_exports,
    pcn_partition_segments,
    pcn_partition_maps,
    pcn_partition_impact_report,
    pcn_partition_trends,
]

pcn_outputs_job_def = dg.define_asset_job(
    PCN_JOB,
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.multiprocess_executor.configured({"max_concurrent": MAX_CONCURRENT_STEPS}),
    description="One PCN's exports, maps and impact report from the promoted warehouse, "
    "read-only, steps in parallel processes (docs/scaling.md).",
)


def build_resources(home: Path, output: Path | None = None) -> dict:
    return {
        "warehouse_ro": ReadOnlyWarehouse(database=str(warehouse_path(Path(home)))),
        "pcn_output": PcnOutputFolder(root=str(output or home)),
    }


def pcn_outputs_job(home: str | None = None, output: str | None = None) -> dg.JobDefinition:
    """The job alone, for :func:`dagster.build_reconstructable_job` (each step process
    rebuilds it from these arguments). Defaults: ``PHM_HOME`` and the home itself."""
    from pipelines.resources import DEFAULT_HOME

    home_path = Path(home or os.environ.get("PHM_HOME") or DEFAULT_HOME).resolve()
    defs = dg.Definitions(
        assets=ASSETS,
        jobs=[pcn_outputs_job_def],
        resources=build_resources(home_path, Path(output) if output else None),
    )
    return defs.resolve_job_def(PCN_JOB)


def warehouse_pcns(home: Path) -> list[str]:
    """The PCN codes of the home's promoted warehouse (the partition keys)."""
    with session(warehouse_path(Path(home)), read_only=True) as con:
        rows = con.execute(
            "SELECT DISTINCT pcn_code FROM marts.patient_measures WHERE pcn_code IS NOT NULL "
            "ORDER BY pcn_code"
        ).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True)
class PcnRun:
    pcn_code: str
    run_id: str
    success: bool


def run_pcn_outputs(
    home: Path,
    *,
    instance: dg.DagsterInstance,
    output: Path | None = None,
    pcn_codes: Sequence[str] | None = None,
    parallel: int = 2,
) -> list[PcnRun]:
    """Write each PCN's files (all PCNs of the warehouse, or ``pcn_codes``) under
    ``<output or home>/exports/<extract_date>/``: one Dagster run per PCN partition,
    ``parallel`` runs at a time, each run's steps in their own processes. ``instance`` must be
    a persistent instance (the multiprocess executor needs one; e.g. ``HOME/dagster``)."""
    home = Path(home).resolve()
    with home_lock(home):
        codes = list(pcn_codes) if pcn_codes else warehouse_pcns(home)
        known = set(instance.get_dynamic_partitions(PCN_PARTITIONS.name))
        new = [c for c in codes if c not in known]
        if new:
            instance.add_dynamic_partitions(PCN_PARTITIONS.name, new)
        kwargs = {"home": str(home)}
        if output is not None:
            kwargs["output"] = str(Path(output).resolve())
        recon = dg.build_reconstructable_job(
            "pipelines.partitioned", "pcn_outputs_job", reconstructable_kwargs=kwargs
        )

        def one(pcn: str) -> PcnRun:
            with dg.execute_job(
                recon, instance, tags={"dagster/partition": pcn}, raise_on_error=False
            ) as result:
                return PcnRun(pcn, result.run_id, result.success)

        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            return list(pool.map(one, codes))
