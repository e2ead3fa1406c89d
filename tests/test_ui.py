"""The Dagster UI as it is used: ``dagster dev`` (webserver and daemon, as ``make ui`` starts
it) over a small home, driven through the GraphQL API the UI itself calls: list the asset
groups, launch a materialisation of one asset for one delivery partition (as the UI's
*Materialize* -> partition picker does), wait for it, read its metadata, stop cleanly.

The instance is the home's own (HOME/dagster with the repository's dagster.yaml, as
``make ui``): runs launched from the webserver are queued and started by the daemon that
``dagster dev`` runs alongside the webserver."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from phm.paths import REPO_ROOT
from pipelines.runner import prepare_dagster_home

STARTUP_SECONDS = 180
RUN_SECONDS = 180
ASSET = ["reports", "cohort_size_history"]
DELIVERY = "2026-11-01"  # small_home's delivery (tests/conftest.py)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    assert "errors" not in answer, answer.get("errors")
    return answer["data"]


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture(scope="module")
def webserver(small_home):
    extracts, home = small_home
    dh = prepare_dagster_home(home)
    port = _free_port()
    env = os.environ | {
        "DAGSTER_HOME": str(dh),
        "PHM_HOME": str(home),
        "PHM_EXTRACTS": str(extracts),
        "PHM_PSEUDONYMISATION_KEY": "0123456789abcdef0123456789abcdef0123",
    }
    log = Path(home) / "ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-m",
                "pipelines.definitions",
                "-d",
                str(REPO_ROOT),
            ],
            cwd=dh,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    try:
        _wait(up, STARTUP_SECONDS, "the webserver")
        yield base, log
    finally:
        pgid = os.getpgid(proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("dagster dev did not stop on SIGTERM") from None
        # the webserver, daemon and code servers all went with it
        _wait(lambda: not _group_alive(pgid), 30, "the process group to exit")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ui_lists_groups_materialises_an_asset_and_shows_its_metadata(webserver, small_home):
    base, log = webserver
    url = f"{base}/graphql"

    groups = _post(url, "{ assetNodes { assetKey { path } groupName isPartitioned } }")[
        "assetNodes"
    ]
    by_group: dict[str, set] = {}
    for node in groups:
        by_group.setdefault(node["groupName"], set()).add("/".join(node["assetKey"]["path"]))
    # every asset is partitioned: by delivery (nightly job), by PCN (the scale-out job)
    assert all(node["isPartitioned"] for node in groups)
    partitions = _post(
        url,
        "query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) { ... on AssetNode { "
        "partitionKeys } } }",
        {"k": {"path": ASSET}},
    )["assetNodeOrError"]["partitionKeys"]
    # the delivery small_home's phm run added (its extract date)
    assert partitions == [DELIVERY]
    assert {"ingest", "staging", "measures", "cohorts", "segmentation", "geo", "impact"} <= set(
        by_group
    )
    assert "reports/cohort_size_history" in by_group["cohorts"]

    repos = _post(
        url,
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }",
    )["repositoriesOrError"]["nodes"]
    assert len(repos) == 1
    launched = _post(
        url,
        """mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) {
            __typename
            ... on LaunchRunSuccess { run { runId } }
            ... on PythonError { message }
            ... on InvalidSubsetError { message }
        } }""",
        {
            "p": {
                "selector": {
                    "repositoryLocationName": repos[0]["location"]["name"],
                    "repositoryName": repos[0]["name"],
                    "pipelineName": "phm_nightly",
                    "assetSelection": [{"path": ASSET}],
                },
                "mode": "default",
                # what the UI sends for one chosen partition
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DELIVERY}]},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished():
        status = _post(
            url,
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]["status"]
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    status = _wait(finished, RUN_SECONDS, "the run")
    assert status == "SUCCESS", log.read_text()[-3000:]

    asset = _post(
        url,
        """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset {
            assetMaterializations(limit: 1) { runId partition metadataEntries { label
                ... on IntMetadataEntry { intValue }
                ... on TextMetadataEntry { text } } } } } }""",
        {"k": {"path": ASSET}},
    )["assetOrError"]["assetMaterializations"]
    assert asset and asset[0]["runId"] == run_id
    assert asset[0]["partition"] == DELIVERY
    metadata = {e["label"]: e.get("intValue", e.get("text")) for e in asset[0]["metadataEntries"]}
    _, home = small_home
    import duckdb

    con = duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True)
    try:
        rows, dates = con.execute(
            "SELECT count(*), count(DISTINCT extract_date) FROM reports.cohort_size_history"
        ).fetchone()
    finally:
        con.close()
    assert metadata["rows"] == rows > 0
    assert metadata["deliveries"] == dates == 1
