"""The sandbox as a background process: `sg-orch sandbox up | down | serve`.

`serve` runs a `Sandbox` in the foreground until SIGTERM or SIGINT; once ready it writes the districts
file, its env file and the state file `{state_dir}/sandbox.json` ({"pid", "urls", "districts_file",
"env_file"}). `up` starts `serve` detached (its own session, output in `{state_dir}/sandbox.log`), waits
for that state file and returns it with "log" added. `up` restarts: a sandbox already running is stopped
first, so there is only ever one, serving the inputs last given. `down` stops it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from sg_orchestration.paths import state_dir
from sg_orchestration.sandbox.data import read_district, write_atomically
from sg_orchestration.sandbox.server import Sandbox

READY_TIMEOUT = 120  # seconds: loading a large generated district takes a while
STOP_TIMEOUT = 10

log = logging.getLogger(__name__)


def _state_file() -> Path:
    return state_dir() / "sandbox.json"


def _read_state() -> dict | None:
    try:
        return json.loads(_state_file().read_text())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    # a child of this very process (up then down in one process) stays a zombie, which still takes
    # signals, until it is reaped
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        pass
    return True


def _is_sandbox(pid: int) -> bool:
    """Alive and still our server: after a reboot the recorded pid may belong to another program."""
    if not _alive(pid):
        return False
    try:
        return b"sandbox" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc").is_dir()  # no procfs (macOS): trust the pid


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _stop(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, STOP_TIMEOUT):
            return


def down() -> bool:
    """Stop the sandbox recorded in the state file; False if none was running."""
    state = _read_state()
    running = state is not None and _is_sandbox(state["pid"])
    if running:
        _stop(state["pid"])
    _state_file().unlink(missing_ok=True)
    return running


def up(inputs: Path, districts_out: Path) -> dict:
    """Start the sandbox detached over `inputs`, write `districts_out` and its env file; the state dict.

    InputsError (before anything starts or stops) if `inputs` lacks `district.json` or it is incomplete."""
    read_district(Path(inputs))  # refused here, with the format, rather than in the detached process's log
    down()
    log_file = state_dir() / "sandbox.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "sg_orchestration.cli", "sandbox", "serve"]
    command += [
        "--inputs",
        str(Path(inputs).resolve()),
        "--districts-out",
        str(Path(districts_out).resolve()),
    ]
    # posix_spawn rather than Popen: the server outlives this call, and a Popen object dropped while its
    # process runs warns; `_alive` reaps it instead
    pid = os.posix_spawn(
        sys.executable,
        command,
        os.environ,
        setsid=True,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_file), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while (state := _read_state()) is None or state["pid"] != pid:
        if not _alive(pid):
            raise RuntimeError(f"the sandbox exited before it was ready; see {log_file}")
        if time.monotonic() > deadline:
            _stop(pid)
            raise TimeoutError(f"the sandbox was not ready after {READY_TIMEOUT} s; see {log_file}")
        time.sleep(0.05)
    return {**state, "log": str(log_file)}


def serve(inputs: Path, districts_out: Path) -> None:
    """Run the sandbox in the foreground until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # blocked before the server thread starts, so it inherits the mask and only sigwait() below sees them
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        with Sandbox(inputs) as sb:
            env_file = sb.write_districts_file(districts_out)
            state = {
                "pid": os.getpid(),
                "urls": sb.urls,
                "districts_file": str(Path(districts_out).resolve()),
                "env_file": str(env_file.resolve()),
            }
            write_atomically(_state_file(), json.dumps(state, indent=2))
            log.info("sandbox ready: %s", ", ".join(f"{name} {url}" for name, url in sb.urls.items()))
            signal.sigwait(stop_signals)
            log.info("sandbox stopping")
    finally:
        if (_read_state() or {}).get("pid") == os.getpid():
            _state_file().unlink(missing_ok=True)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
