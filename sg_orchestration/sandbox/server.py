"""`Sandbox`: every sandbox server on 127.0.0.1, in a background thread running its own event loop."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from pathlib import Path

import yaml
from aiohttp import web

from sg_orchestration.sandbox.data import read_district, write_atomically
from sg_orchestration.sandbox.edfi import EdFiApi
from sg_orchestration.sandbox.qmlativ import Faults, QmlativApi
from sg_orchestration.sandbox.samegoal import SameGoalApi
from sg_orchestration.sandbox.sftp import SftpServer, new_client_key

SAMEGOAL_CLIENT_ID = "SG_SANDBOX_SAMEGOAL_CLIENT_ID"
SAMEGOAL_CLIENT_SECRET = "SG_SANDBOX_SAMEGOAL_CLIENT_SECRET"
QMLATIV_KEY = "SG_SANDBOX_QMLATIV_KEY"
QMLATIV_SECRET = "SG_SANDBOX_QMLATIV_SECRET"
EDFI_KEY = "SG_SANDBOX_EDFI_KEY"
EDFI_SECRET = "SG_SANDBOX_EDFI_SECRET"
SFTP_KEY = "SG_SANDBOX_SFTP_KEY"  # the private key School Passport's SFTP server (`sftp.py`) authorizes
CREDENTIAL_NAMES = (
    SAMEGOAL_CLIENT_ID,
    SAMEGOAL_CLIENT_SECRET,
    QMLATIV_KEY,
    QMLATIV_SECRET,
    EDFI_KEY,
    EDFI_SECRET,
    SFTP_KEY,
)
INDIANA_TIMEZONE = "America/Indiana/Indianapolis"
FILE_DROP_SYSTEMS = ("powerschool", "oneroster", "campus")  # read from folders; the others come over the APIs


class Sandbox:
    """The SameGoal, Qmlativ and Ed-Fi servers over a generated input folder, and the SFTP server
    the OneRoster bundle is delivered to, on free ports:

        with Sandbox(inputs_dir) as sb:
            sb.urls["samegoal"], sb.credentials[SAMEGOAL_CLIENT_ID], sb.write_districts_file(path)

    Credentials (env-var name -> value) are random per sandbox unless given. The Qmlativ writeback objects
    persist in `state_dir` (default `{inputs}/.qmlativ-store/`), so a later sandbox there serves them;
    `qmlativ_faults` (see `qmlativ.Faults`, e.g. `{"error_rate": 0.2, "seed": 1}`) injects failures from
    the start, and `POST /_sandbox/qmlativ/faults` changes them while running. The Ed-Fi ODS/API
    emulator's records persist beside them (`edfi.sqlite3`); `edfi_faults` is its `qmlativ_faults`.
    What is delivered over SFTP lands under `state_dir / "sftp"`.
    """

    def __init__(
        self,
        inputs: Path,
        *,
        credentials: dict[str, str] | None = None,
        token_ttl: int = 3600,
        state_dir: Path | None = None,
        qmlativ_faults: dict | None = None,
        edfi_faults: dict | None = None,
    ):
        self.inputs = Path(inputs).resolve()
        self.state_dir = Path(state_dir).resolve() if state_dir else self.inputs / ".qmlativ-store"
        self.qmlativ_faults = Faults.parse(qmlativ_faults)  # a bad option fails here, not in the server
        self.edfi_faults = Faults.parse(edfi_faults)
        self.district = read_district(self.inputs)
        self.credentials = {
            name: new_client_key() if name == SFTP_KEY else secrets.token_urlsafe(24)
            for name in CREDENTIAL_NAMES
        } | (credentials or {})
        self.sftp = SftpServer(self.state_dir / "sftp", self.credentials[SFTP_KEY])
        self.token_ttl = token_ttl
        self.urls: dict[str, str] = {}
        self._runners: list[web.AppRunner] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _apps(self) -> dict[str, web.Application]:
        c = self.credentials
        samegoal = SameGoalApi(
            self.inputs / "samegoal", (c[SAMEGOAL_CLIENT_ID], c[SAMEGOAL_CLIENT_SECRET]), self.token_ttl
        )
        qmlativ = QmlativApi(
            self.inputs / "qmlativ",
            (c[QMLATIV_KEY], c[QMLATIV_SECRET]),
            int(self.district["qmlativ_entity_id"]),
            self.token_ttl,
            store_path=self.state_dir / "qmlativ.sqlite3",
            faults=self.qmlativ_faults,
        )
        edfi = EdFiApi(
            self.inputs / "campus",
            (c[EDFI_KEY], c[EDFI_SECRET]),
            self.district.get("edfi_district_number"),
            self.token_ttl,
            store_path=self.state_dir / "edfi.sqlite3",
            faults=self.edfi_faults,
        )
        return {"samegoal": samegoal.app(), "qmlativ": qmlativ.app(), "edfi": edfi.app()}

    def __enter__(self) -> Sandbox:
        apps = self._apps()  # loading the files can fail; do it before there is a thread to clean up
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sg-sandbox", daemon=True)
        self._thread.start()
        try:
            self.urls = self._call(self._start(apps))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self._loop is None:
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._thread = None
        self.urls = {}

    def _call(self, coro: Coroutine):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _start(self, apps: dict[str, web.Application]) -> dict[str, str]:
        urls = {}
        for name, app in apps.items():
            # access logs would carry query strings (cursors) and nothing a sandbox user needs
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            urls[name] = f"http://{host}:{port}"
        urls["sftp"] = f"sftp://127.0.0.1:{await self.sftp.start()}"
        return urls

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await self.sftp.stop()

    def _indiana_district(self) -> dict | None:
        """The `{id}-in` district of `write_districts_file`, or None when the inputs cannot make one."""
        d = self.district
        campus = self.inputs / "campus"
        if not (campus.is_dir() and d.get("edfi_district_number") and d.get("school_years")):
            return None
        connection = {
            "name": "idoe",
            "base_url": self.urls["edfi"],
            "key_env": EDFI_KEY,
            "secret_env": EDFI_SECRET,
            "district_number": str(d["edfi_district_number"]),
            "school_years": [int(y) for y in d["school_years"]],
        }
        return {
            "id": f"{d['id']}-in",
            "name": f"{d['name']} (Indiana)",
            "state": "IN",
            "timezone": INDIANA_TIMEZONE,
            "inputs": {"campus_dir": str(campus)},
            "edfi": {"profile": "indiana", "connections": [connection]},
        }

    def _file_drops(self, systems: tuple[str, ...]) -> dict[str, str]:
        """The `inputs` section of the systems' file drops the inputs have: a folder named there that is
        not there fails its ingest."""
        return {f"{s}_dir": str(self.inputs / s) for s in systems if (self.inputs / s).is_dir()}

    def _oneroster_district(self, known_hosts: Path) -> dict | None:
        """The `{id}-or` district of `write_districts_file`, or None when the inputs have no SIS export
        for OneRoster (a PowerSchool export or a OneRoster bundle)."""
        d = self.district
        inputs = self._file_drops(("powerschool", "oneroster"))
        if not inputs:
            return None
        return {
            "id": f"{d['id']}-or",
            "name": f"{d['name']} (OneRoster)",
            "state": d["state"],
            "timezone": d["timezone"],
            "inputs": inputs,
            "oneroster": {"delivery": self.sftp.delivery(SFTP_KEY, known_hosts)},
        }

    def write_districts_file(self, path: Path) -> Path:
        """A districts.yaml for the generated district pointing at these servers, and beside it
        (`path.with_suffix(".env")`, `NAME=value` lines) the credentials it names; returns the env file.

        When the inputs have the campus (Indiana SIS) extracts and `district.json` an Ed-Fi district
        number and school years, a second district `{id}-in` (state IN) publishes them to the Ed-Fi
        emulator: the Ed-Fi target has its own district, so the first district's nightly is only the
        Qmlativ writeback's. So has the OneRoster target, when the inputs have its SIS export: a district
        `{id}-or` delivering to the SFTP server, whose host key is the known_hosts file beside the
        districts file (`path.with_suffix(".known_hosts")`)."""
        if not self.urls:
            raise RuntimeError("the sandbox is not running: use `with Sandbox(...) as sb:`")
        d = self.district
        district = {
            "id": d["id"],
            "name": d["name"],
            "state": d["state"],
            "timezone": d["timezone"],
            "inputs": self._file_drops(FILE_DROP_SYSTEMS),
            "samegoal": {
                "base_url": self.urls["samegoal"],
                "client_id_env": SAMEGOAL_CLIENT_ID,
                "client_secret_env": SAMEGOAL_CLIENT_SECRET,
                "cutover_dates": d["cutover_dates"],
            },
            "qmlativ": {
                "base_url": self.urls["qmlativ"],
                "client_key_env": QMLATIV_KEY,
                "client_secret_env": QMLATIV_SECRET,
                "entity_id": int(d["qmlativ_entity_id"]),
                "access_expires": d["qmlativ_access_expires"],
            },
        }
        path = Path(path)
        known_hosts = path.with_suffix(".known_hosts")
        districts = [
            district,
            *filter(None, [self._indiana_district(), self._oneroster_district(known_hosts)]),
        ]
        env_file = path.with_suffix(".env")
        header = f"# Written by the sg-orch sandbox for {self.inputs}; credentials are in {env_file.name}.\n"
        write_atomically(path, header + yaml.safe_dump({"districts": districts}, sort_keys=False))
        write_atomically(known_hosts, self.sftp.known_hosts_line)
        write_atomically(env_file, "".join(f"{k}={v}\n" for k, v in self.credentials.items()), mode=0o600)
        return env_file
