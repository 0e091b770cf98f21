"""The sandbox's SFTP server (SPEC §6): School Passport's SFTP import, as the OneRoster delivery meets it.

asyncssh's server on 127.0.0.1, with a host key of its own (new per server, so a known_hosts entry for
another server is refused), public-key authentication of one client key (the sandbox's credential
`SFTP_KEY`), and SFTP only, chrooted to `root`: what is uploaded lands under `root`. Its `REMOTE_DIR`
exists from the start, as an upload folder School Passport gives a district does.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import asyncssh

HOST = "127.0.0.1"
USER = "school-passport"
REMOTE_DIR = "/upload"


def new_client_key() -> str:
    """A fresh private key, base64 of its OpenSSH text: one word, as a credential of the sandbox's
    `NAME=value` env file must be (a shell can source it), and a form the delivery reads."""
    return base64.b64encode(asyncssh.generate_private_key("ssh-ed25519").export_private_key()).decode()


class _Connections(asyncssh.SSHServer):
    """Keeps the server's open connections in `open`: the listener's close leaves them running."""

    def __init__(self, open_connections: set):
        self.open = open_connections
        self._conn = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self.open.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open.discard(self._conn)


class SftpServer:
    """`await start()` on the event loop that is to serve it; `known_hosts_line` and `delivery` then say
    how to reach it. `drop_connections()` cuts every open connection, as a network failure would."""

    def __init__(self, root: Path, client_key: str):
        self.root = Path(root)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        client = asyncssh.import_private_key(base64.b64decode(client_key))
        self._authorized = asyncssh.import_authorized_keys(client.export_public_key().decode())
        self._server: asyncssh.SSHAcceptor | None = None
        self._open: set[asyncssh.SSHServerConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    async def start(self) -> int:
        (self.root / REMOTE_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._server = await asyncssh.create_server(
            lambda: _Connections(self._open),
            HOST,
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=self._authorized,
            sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=str(self.root).encode()),
            allow_scp=False,  # SFTP only: without a process or session factory there is no shell
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def drop_connections(self) -> None:
        """Cut every open connection, as a network failure would; from any thread."""
        self._loop.call_soon_threadsafe(self._abort_all)

    def _abort_all(self) -> None:
        for conn in list(self._open):
            conn.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._abort_all()  # a connection left open would keep wait_closed waiting
            await self._server.wait_closed()
            self._server = None

    @property
    def known_hosts_line(self) -> str:
        """This server's entry in OpenSSH known_hosts format, as `ssh-keyscan -p PORT 127.0.0.1` gives it."""
        return f"[{HOST}]:{self.port} {self.host_key.export_public_key().decode().strip()}\n"

    def delivery(self, key_env: str, known_hosts: Path) -> dict:
        """The districts file's `oneroster.delivery` section for this server."""
        sftp = {"host": HOST, "port": self.port, "user": USER, "key_env": key_env, "remote_dir": REMOTE_DIR}
        return {"sftp": {**sftp, "known_hosts": str(known_hosts)}}
