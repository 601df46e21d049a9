"""One way to open a SQLAlchemy database for our stores (consent registry, lineage index).

SQLite by default (a file under LINEAGE_HOME), any SQLAlchemy URL otherwise (PostgreSQL in
production). Writers are serialised per transaction: SQLite transactions start with
``BEGIN IMMEDIATE`` (the write lock up front, so two writers never both read the chain head
and then collide), with WAL so readers are not blocked, and a busy timeout so a waiting
writer waits instead of failing.
"""

from __future__ import annotations

import contextlib
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from lineage.credentials import private_dir
from lineage.errors import ConfigError, LineageError
from lineage.redact import redact_url

if TYPE_CHECKING:
    from lineage.config import Settings

SQLITE_BUSY_TIMEOUT_S = 60


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_engine(url: str, env_var: str, what: str) -> Engine:
    """An engine for `url`; a URL that cannot work is an error naming `env_var`."""
    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"{env_var}={shown!r} is not a database URL",
            "use e.g. sqlite:////path/file.db or postgresql+psycopg://host/db",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            parent = Path(database).expanduser().parent
            if not parent.is_dir():
                raise ConfigError(
                    f"cannot open the {what} at {shown}: directory {parent} does not exist",
                    f"create it, or set {env_var} to a writable location",
                )
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _serialise_sqlite(engine, Path(database) if database and database != ":memory:" else None)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except NoSuchModuleError:
        raise ConfigError(
            f"no SQLAlchemy driver for {parsed.drivername} ({env_var})",
            "install the driver (for PostgreSQL: pip install 'psycopg[binary]')",
        ) from None
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the database driver {exc.name} for {shown} is not installed",
            "install it (for PostgreSQL: pip install 'psycopg[binary]')",
        ) from None


def _serialise_sqlite(engine: Engine, path: Path | None) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        if path is not None:  # consent and lineage records: owner only, WAL files too
            for each in (
                path,
                path.with_name(f"{path.name}-wal"),
                path.with_name(f"{path.name}-shm"),
            ):
                with contextlib.suppress(OSError):
                    if each.stat().st_mode & 0o077:
                        each.chmod(0o600)

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class SqlStore:
    """A store in one SQLAlchemy database: opened from a URL or the settings, its tables
    created on first use, and every database failure reported with the setting to fix."""

    env_var: ClassVar[str]
    what: ClassVar[str]  # e.g. "consent registry"
    hint: ClassVar[str]  # what to do when it cannot be used
    metadata: ClassVar[MetaData]
    error: ClassVar[type[LineageError]] = LineageError

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown_url = redact_url(url)
        self.engine: Engine = open_engine(url, self.env_var, self.what)
        # the pooled connections are closed when the store goes (an audit opens its stores
        # per question): left to the garbage collector, PostgreSQL's would stay open until
        # then, and psycopg warns about each one (ResourceWarning)
        weakref.finalize(self, self.engine.dispose)
        try:
            self.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise self.unusable(exc) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        url, is_default = cls.settings_url(settings)
        if is_default:  # the default SQLite file lives in LINEAGE_HOME
            private_dir(settings.home)
        return cls(url)

    @classmethod
    def settings_url(cls, settings: Settings) -> tuple[str, bool]:
        """(the URL, whether it is the default under LINEAGE_HOME)."""
        raise NotImplementedError

    def unusable(self, exc: Exception) -> LineageError:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        return self.error(f"cannot use the {self.what} at {self.shown_url}: {detail}", self.hint)
