"""The Dagster UI, in a real browser, shows the asset graph: ingest assets feeding the dbt staging models.

Starts `dagster-webserver` on the repo's workspace.yaml (DAGSTER_HOME, warehouse and state in tmp), drives
Debian's Chromium with Playwright and saves `test-artifacts/asset-graph.png` for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from sg_orchestration.paths import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = PROJECT_ROOT / "test-artifacts" / "asset-graph.png"
RAW_ASSET = "samegoal__special_education_enrollment"  # key raw/<this>, group `ingest`
STAGING_ASSET = "stg_samegoal__special_education_enrollment"  # key staging/<this>, group `dbt_staging`
# The global lineage page narrowed (the `~` part is the asset-selection box) to the staging model and
# what feeds it, so both nodes fit the viewport: the graph only renders nodes that are on screen.
GRAPH_PATH = "/asset-groups~" + quote(f'+key:"staging/{STAGING_ASSET}"', safe="")
STARTUP_TIMEOUT = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    """The webserver starts a code server of its own: stop the whole process group, not just the parent."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: install Debian's chromium (`make browser`) for the browser test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def webserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A dagster-webserver on a free port over the example districts file; yields its base URL."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")  # as runner.dagster_home() does
    env = {
        "DAGSTER_HOME": str(home),
        "SG_DISTRICTS_FILE": str(PROJECT_ROOT / "districts.example.yaml"),
        "SG_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "SG_STATE_DIR": str(tmp_path / "state"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    # The code location builds the dbt assets from target/manifest.json, which a fresh clone lacks.
    from sg_orchestration.transform.dbt import prepare

    prepare()

    port = _free_port()
    log = tmp_path / "webserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port)]
            + ["-w", str(PROJECT_ROOT / "workspace.yaml")],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches the code server too
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not answer in {STARTUP_TIMEOUT}s:\n{_tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


@pytest.mark.timeout(300)
def test_asset_graph_shows_ingest_and_staging(webserver: str, chromium: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)  # a picture left by an earlier run must not pass for this one
    with sync_api.sync_playwright() as pw:
        # A persistent context is how Playwright takes a user-data-dir: a fresh one, in tmp.
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        try:
            # Dismiss the "Join the Dagster community" dialog before it covers the graph.
            page.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
            page.goto(webserver + GRAPH_PATH)

            # Groups start collapsed; open each one (clicking its node) until none is left closed.
            collapsed = page.locator("foreignObject.group [aria-label=unfold_more]")
            collapsed.first.wait_for(timeout=90_000)
            for _ in range(10):
                if not collapsed.count():
                    break
                collapsed.first.click()
                page.wait_for_timeout(500)

            # Nodes middle-truncate long names on screen; the full name is in their `data-tooltip`.
            for name in (STAGING_ASSET, RAW_ASSET, "ingest", "dbt_staging"):
                node = page.locator(f'svg foreignObject [data-tooltip="{name}"]')
                node.first.wait_for(state="visible", timeout=60_000)
                assert node.count() == 1, f"{name} is not shown once in the asset graph"

            page.wait_for_timeout(1000)  # let the pan/zoom animation settle before the picture
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        except Exception:
            # What the browser saw is the quickest way to tell a slow load from a changed UI.
            page.screenshot(path=str(SCREENSHOT.with_name("asset-graph-failure.png")), full_page=True)
            raise
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 0
