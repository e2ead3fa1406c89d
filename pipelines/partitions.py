"""The deliveries as Dagster partitions: one dynamic partition key per extract date.

Every asset of the nightly job ``phm_nightly`` is partitioned by :data:`DELIVERY_PARTITIONS`,
so the UI offers a partition picker (*Materialize* -> choose a delivery) and a backfill
dialog (several deliveries), and each run says which delivery it was for. A run of partition
``<extract date>`` reads that delivery (:attr:`pipelines.resources.PHMSettings.selected_delivery`).

Keys are added by whoever starts a run: the ``new_delivery_sensor`` (a dynamic partitions
request with its run requests), the ``nightly_0200`` schedule and ``phm run``
(:func:`register_delivery`). A key is an extract date (``2026-11-01``): the name of the
delivery's folder under the extracts root.

This module imports nothing from the rest of ``pipelines`` so the assets, the sensors, the
schedule and the runner can all import it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from phm.delivery import find_delivery

#: every delivery run or seen by the sensor, one dynamic partition key per extract date
DELIVERY_PARTITIONS = dg.DynamicPartitionsDefinition(name="delivery")

#: the run tag Dagster sets on a run of one partition
PARTITION_TAG = "dagster/partition"


def delivery_key(extracts_root: Path | str, delivery: str | None = None) -> str:
    """The partition key of ``delivery`` (checked: a complete delivery folder), or of the
    latest complete delivery when ``delivery`` is None. Raises
    :class:`phm.delivery.DeliveryError` (missing root, no complete delivery, no such delivery,
    delivery still arriving)."""
    return find_delivery(Path(extracts_root), delivery).name


def register_delivery(instance: dg.DagsterInstance, extract_date: str) -> None:
    """Add ``extract_date`` to the instance's ``delivery`` partitions (if not there yet)."""
    if not instance.has_dynamic_partition(DELIVERY_PARTITIONS.name, extract_date):
        instance.add_dynamic_partitions(DELIVERY_PARTITIONS.name, [extract_date])
