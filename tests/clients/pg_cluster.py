"""A throw-away PostgreSQL cluster for the fleet tests (SPEC 9), as tests/support/postgres.rs
makes one for the Rust tests: the distribution's server programs, a fresh data directory in a
temporary directory, 127.0.0.1 on a free port, password (SCRAM) authentication for every
connection, and a database `audit` owned by the unprivileged role `retention`.

- The programs are found with `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin,
  else the directory of `initdb` on PATH. Missing: the test fails, saying how to install them.
- PostgreSQL refuses to run as root: as root, the server runs as the system user
  `retention-pg` (created when missing) through `runuser`, and owns the temporary directory.
- Readiness is polled with `pg_isready` against a deadline.
- `stop()` ends the server (`pg_ctl stop -m immediate` when it is stopped as cleanup) and the
  directory is removed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

SERVER_USER = "retention-pg"
SUPERUSER = "postgres"
ROLE = "retention"
DATABASE = "audit"
PROGRAMS = ("initdb", "pg_ctl", "postgres", "pg_isready", "psql")
PG_WAIT_S = 60.0

INSTALL_HINT = ("the fleet tests need a real PostgreSQL; install the distribution's package "
                "(apt-get install -y --no-install-recommends postgresql)")


def _has_programs(d: Path) -> bool:
    return all((d / p).is_file() for p in PROGRAMS)


def bindir() -> Optional[Path]:
    """The directory holding PostgreSQL's server programs, or None."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        if out.returncode == 0 and _has_programs(Path(out.stdout.strip())):
            return Path(out.stdout.strip())
    except OSError:
        pass
    versions = []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for e in root.iterdir():
            if e.name.isdigit() and _has_programs(e / "bin"):
                versions.append((int(e.name), e / "bin"))
    if versions:
        return max(versions)[1]
    initdb = shutil.which("initdb")
    if initdb:
        d = Path(os.path.realpath(initdb)).parent
        if _has_programs(d):
            return d
    return None


def _sbin(name: str) -> str:
    for d in ("/usr/sbin", "/sbin"):
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    return name


def _server_user() -> pwd.struct_passwd:
    """`retention-pg`, created when missing."""
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    r = subprocess.run([_sbin("useradd"), "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", SERVER_USER], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise AssertionError(f"cannot create the system user {SERVER_USER} that PostgreSQL runs "
                             f"as (it refuses to run as root): useradd exited {r.returncode}: "
                             f"{r.stderr.strip()}") from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env() -> dict:
    """The environment without libpq's variables (PGHOST, PGPASSWORD, ...)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class PgCluster:
    """A PostgreSQL cluster of its own, started by `start()`, removed by `stop()`."""

    def __init__(self):
        d = bindir()
        if d is None:
            raise AssertionError(f"PostgreSQL's server programs ({', '.join(PROGRAMS)}) were not "
                                 f"found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH): "
                                 + INSTALL_HINT)
        self.bindir = d
        self.user = _server_user() if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="retention-pg-"))
        self.port = 0
        self.superuser_password = uuid.uuid4().hex
        self.password = uuid.uuid4().hex
        self.running = False

    # ----------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """The database the proxies use, as its owner, password included."""
        return f"postgres://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # ----------------------------------------------------------------- running programs

    def _server_cmd(self, program: str, *args: str) -> list:
        exe = str(self.bindir / program)
        if self.user is not None:
            return [_sbin("runuser"), "-u", SERVER_USER, "--", exe, *args]
        return [exe, *args]

    def _run(self, cmd: list, what: str, extra_env: Optional[dict] = None):
        env = _clean_env()
        env["LC_ALL"] = "C"
        env.update(extra_env or {})
        r = subprocess.run(cmd, cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=PG_WAIT_S + 30)
        if r.returncode != 0:
            raise AssertionError(f"PostgreSQL test cluster ({self.dir}, port {self.port}): {what} "
                                 f"failed ({r.returncode}): {r.stdout.strip()}\n"
                                 f"{r.stderr.strip()}\n--- server log ---\n{self.log_tail()}")
        return r

    def _give(self, path: Path):
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def psql(self, database: str, *statements: str) -> str:
        """Each statement as its own `psql -c`, as the superuser; unaligned tuples-only output."""
        cmd = [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database]
        for s in statements:
            cmd += ["-c", s]
        r = self._run(cmd, f"psql {statements!r}",
                      {"PGPASSWORD": self.superuser_password, "PGCONNECT_TIMEOUT": "10"})
        return r.stdout.rstrip("\n")

    # ----------------------------------------------------------------- life cycle

    def start(self) -> "PgCluster":
        os.chmod(self.dir, 0o700)
        self._give(self.dir)
        pwfile = self.dir / "superuser.password"
        pwfile.write_text(self.superuser_password + "\n")
        os.chmod(pwfile, 0o600)
        self._give(pwfile)
        socket_dir = self.dir / "socket"
        socket_dir.mkdir(mode=0o700)
        self._give(socket_dir)
        self._run(self._server_cmd("initdb", "-D", str(self.data), "-U", SUPERUSER,
                                   "--auth=scram-sha-256", "-E", "UTF8", "--locale=C",
                                   "--no-sync", f"--pwfile={pwfile}"), "initdb")
        conf = self.data / "postgresql.conf"
        conf.write_text(conf.read_text() + "\ninclude 'retention-test.conf'\n")
        last = ""
        for _ in range(5):  # a port found free may be taken before the server binds it
            self.port = _free_port()
            settings = self.data / "retention-test.conf"
            settings.write_text(
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{socket_dir}'\n"
                "max_connections = 100\n")
            self._give(settings)
            env = _clean_env()
            env["LC_ALL"] = "C"
            r = subprocess.run(
                self._server_cmd("pg_ctl", "-D", str(self.data), "-w", "-t", str(int(PG_WAIT_S)),
                                 "-l", str(self.log_path), "start"),
                cwd=self.dir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if r.returncode == 0:
                self.running = True
                break
            last = f"{r.stdout}{r.stderr}\n{self.log_tail(20)}"
            if "could not bind" not in last and "could not create any TCP/IP sockets" not in last:
                raise AssertionError(f"pg_ctl start failed: {last}")
        else:
            raise AssertionError(f"no free port for PostgreSQL after 5 attempts: {last}")
        self._wait_ready()
        self.psql("postgres",
                  f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'",
                  f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + PG_WAIT_S
        while True:
            r = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p",
                                str(self.port), "-t", "2", "-U", SUPERUSER, "-d", DATABASE],
                               env=_clean_env(), stdin=subprocess.DEVNULL, capture_output=True)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not accept connections within {PG_WAIT_S}s"
                                     f"\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self):
        """Stops the server (immediately: this is cleanup) and removes every file."""
        try:
            if self.running:
                env = _clean_env()
                subprocess.run(self._server_cmd("pg_ctl", "-D", str(self.data), "-w", "-t",
                                                str(int(PG_WAIT_S)), "stop", "-m", "immediate"),
                               cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=PG_WAIT_S + 30)
                self.running = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
