"""Dagster's SQLite storage (the default instance): without an fsync per event, and with its connections kept.

Dagster writes each event of a run (a step's start, each materialization, each asset check, each log line)
as its own SQLite transaction, and its SQLite storages open a new SQLAlchemy engine and a new database
connection for every one of them (`poolclass=NullPool`), then throw both away: ~600 events in a small
district's night, measured 10–16 ms each here, a third of the run. Two changes, both inside this process:

- `synchronous=NORMAL` (SQLite's recommended setting for WAL) instead of a sync of the log at every commit:
  a commit survives any crash of a process; only a power loss may drop the last commits of the event log,
  never the warehouse (DuckDB) nor a target's ledger.
- one engine per database file, whose pool keeps its connections: the event log's run and index shards,
  the run storage and the schedule storage. Every transaction is still its own; nothing is held between
  them but idle connections, which take no lock, so other processes (the UI, the daemon) read and write
  as before. The engines are kept per process and per file (a file replaced on disk, as a test's wiped
  instance, gets a new engine), at most `KEEP_ENGINES` of them (a daemon writes many runs' shards).

Only SQLite connections opened through SQLAlchemy in this process are touched; an instance on PostgreSQL is
unaffected.
"""

import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

KEEP_ENGINES = 16

_installed = False
_lock = threading.Lock()
_engines: "OrderedDict[tuple, Engine]" = OrderedDict()


def _normal_sync(dbapi_connection, _record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("pragma synchronous = normal")


def _engine(conn_string: str, **connect_args) -> Engine:
    """The kept engine of one SQLite file in this process."""
    path = conn_string.removeprefix("sqlite:///")
    try:
        inode = os.stat(path).st_ino
    except OSError:
        inode = None  # not created yet: the first transaction creates it
    key = (os.getpid(), conn_string, inode)
    with _lock:
        engine = _engines.pop(key, None)
        if engine is None:
            engine = create_engine(conn_string, connect_args=connect_args)
        _engines[key] = engine
        while len(_engines) > KEEP_ENGINES:
            _, old = _engines.popitem(last=False)
            old.dispose()  # connections in use elsewhere are closed when they are returned
    return engine


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def _patch_storages() -> None:
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
    from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
    from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS

    @contextmanager
    def event_log_connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:  # as Dagster's own: one transaction of this storage at a time
            engine = _engine(self.conn_string_for_shard(shard), timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with _transaction(engine) as conn:
                yield conn

    tables_found: set[tuple[str, str]] = set()
    has_table = SqliteEventLogStorage.has_table

    def event_log_has_table(self, table_name: str) -> bool:
        # asked at every asset check event; a table, once there, stays
        key = (self.conn_string_for_shard("index"), table_name)
        if key not in tables_found and has_table(self, table_name):
            tables_found.add(key)
        return key in tables_found

    def storage_connect(self) -> Iterator[Connection]:
        return _transaction(_engine(self._conn_string))

    SqliteEventLogStorage._connect = event_log_connect
    SqliteEventLogStorage.has_table = event_log_has_table
    SqliteRunStorage.connect = storage_connect
    SqliteScheduleStorage.connect = storage_connect


def install() -> None:
    global _installed
    if not _installed:
        event.listen(Engine, "connect", _normal_sync)
        _patch_storages()
        _installed = True
