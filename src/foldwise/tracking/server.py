"""A shared MLflow tracking server: PostgreSQL as the backend store, artifacts on disk.

``make mlflow-server`` (``python -m foldwise.tracking.server``) runs, in the foreground until
Ctrl-C:

* a PostgreSQL cluster in ``<repo>/.foldwise/mlflow-server/pgdata`` (created on first
  use, reused afterwards: runs survive restarts), on 127.0.0.1 and a free port only,
  its unix socket in the server folder, password authentication (the password lives in
  a libpq password file, ``pgpass``, mode 0600; it is never printed or put on a command
  line);
* ``mlflow server`` (gunicorn workers) over it, artifacts proxied into
  ``<folder>/artifacts``, bound to 127.0.0.1 unless ``--host`` says otherwise.

PostgreSQL refuses to run as root: as root, ``initdb`` and ``pg_ctl`` run as the
``postgres`` system user (``runuser``) and the cluster's folder belongs to it.
:func:`shared_server` stops exactly what it started: the mlflow process group, then
the postmaster through ``pg_ctl stop``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PG_BIN_ENV = "FOLDWISE_PG_BIN"  # folder holding initdb/pg_ctl, when not found otherwise
DB_USER = "foldwise"
DB_NAME = "mlflow"
SOCKET_MAX = 100  # a unix socket path must fit sockaddr_un (107 bytes on Linux)
INSTALL_HINT = (
    "PostgreSQL's server programs (initdb, pg_ctl) were not found. Install Debian's "
    "PostgreSQL (`apt-get update && apt-get install -y postgresql`; .ci/run does this "
    f"on CI), or set {PG_BIN_ENV} to the folder holding initdb and pg_ctl."
)


class ServerError(RuntimeError):
    """The tracking server could not be set up; the message says what to do."""


def pg_bindir() -> Path:
    """The folder with ``initdb`` and ``pg_ctl``: $FOLDWISE_PG_BIN, PATH, or Debian's."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl")):
            return folder
    raise ServerError(INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _root() -> bool:
    return os.geteuid() == 0


def _owner() -> tuple[int, int]:
    """Who runs PostgreSQL: the postgres user when we are root, else ourselves."""
    if not _root():
        return os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError(
            "running as root, PostgreSQL must run as the `postgres` system user, which "
            "does not exist; install Debian's `postgresql` package (it creates it) or run "
            "as a normal user."
        ) from None
    return pw.pw_uid, pw.pw_gid


def _as_owner(cmd: Sequence[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if _root() else list(cmd)


def _give(path: Path) -> None:
    """Hand a file or folder we created to the PostgreSQL user (a no-op unless root)."""
    if _root():
        uid, gid = _owner()
        os.chown(path, uid, gid)


def _run(cmd: Sequence[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(_as_owner(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServerError(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


@dataclass
class Cluster:
    """The PostgreSQL side: data folder, port, and how to connect (password via file)."""

    folder: Path
    port: int = 0
    pid: int = 0

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"

    @property
    def passfile(self) -> Path:
        return self.folder / "pgpass"

    @property
    def store_uri(self) -> str:
        """SQLAlchemy URI for MLflow's backend store: no password (libpq reads pgpass)."""
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def connect(self, dbname: str = DB_NAME):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=DB_USER,
            dbname=dbname,
            passfile=str(self.passfile),
            connect_timeout=5,
        )


def _check_reachable(folder: Path) -> None:
    """As root, the postgres user must be able to walk into ``folder``."""
    if not _root():
        return
    mode = folder.stat().st_mode
    if not mode & 0o001:
        folder.chmod(mode | 0o001)  # search only: the postgres user may enter, not list
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(folder)])
    if probe.returncode != 0:
        raise ServerError(
            f"PostgreSQL runs as the `postgres` user (we are root), which cannot reach "
            f"{folder}: a folder above it denies others entry (e.g. a 0700 home or "
            "pytest temp folder). Choose a server folder elsewhere (--folder) or "
            "`chmod o+x` the folders on the way."
        )


def _init(cluster: Cluster, bindir: Path) -> None:
    """Create the cluster once, atomically: initdb into pgdata.init, then rename."""
    staging = cluster.folder / "pgdata.init"
    if staging.exists():  # an earlier initdb was interrupted
        shutil.rmtree(staging)
    staging.mkdir(mode=0o700)
    _give(staging)
    password = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(dir=cluster.folder) as tmp:
        tmp_path = Path(tmp)
        _give(tmp_path)
        pwfile = tmp_path / "pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        _give(pwfile)
        _run(
            [str(bindir / "initdb"), "-D", str(staging), "-U", DB_USER,
             f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
             "--locale=C", "--no-instructions"],
            cwd=cluster.folder, what="initdb",
        )  # fmt: skip
    with open(staging / "postgresql.conf", "a") as conf:
        conf.write("\n# foldwise: address, port and socket folder, rewritten at each start\n")
        conf.write("include_if_exists = 'foldwise.conf'\n")
    cluster.passfile.unlink(missing_ok=True)
    fd = os.open(cluster.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"127.0.0.1:*:*:{DB_USER}:{password}\n")
    staging.rename(cluster.pgdata)


def _socket_dir(folder: Path, port: int) -> tuple[Path, bool]:
    """``<folder>/run``, or a short temporary folder when that path is too long."""
    run = folder / "run"
    if len(str(run / f".s.PGSQL.{port}")) <= SOCKET_MAX:
        run.mkdir(mode=0o700, exist_ok=True)
        _give(run)
        return run, False
    tmp = Path(tempfile.mkdtemp(prefix="foldwise-pg-"))
    _give(tmp)
    return tmp, True


@contextlib.contextmanager
def postgres(folder: Path, timeout: float = 60) -> Iterator[Cluster]:
    """Start the cluster in ``folder`` (creating it on first use); stop it on exit."""
    bindir = pg_bindir()
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _owner()
    _check_reachable(folder)
    cluster = Cluster(folder)
    if not (cluster.pgdata / "PG_VERSION").is_file():
        if cluster.pgdata.exists():
            raise ServerError(f"{cluster.pgdata} exists but is not a PostgreSQL cluster")
        _init(cluster, bindir)
    elif not cluster.passfile.is_file():
        raise ServerError(
            f"{cluster.passfile} (the database password) is missing; without it the "
            f"cluster in {cluster.pgdata} cannot be used. Restore it, or remove the "
            "folder to start a new, empty store."
        )
    pg_ctl = str(bindir / "pg_ctl")
    status = subprocess.run(
        _as_owner([pg_ctl, "status", "-D", str(cluster.pgdata)]),
        cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    if status.returncode == 0:
        raise ServerError(
            f"PostgreSQL already runs on {cluster.pgdata} ({status.stdout.strip()}); "
            "another `make mlflow-server` is using this folder. Stop it first."
        )
    cluster.port = free_port()
    sockets, temporary = _socket_dir(folder, cluster.port)
    quoted = str(sockets).replace("'", "''")
    conf = cluster.pgdata / "foldwise.conf"
    conf.write_text(
        "listen_addresses = '127.0.0.1'\n"
        f"port = {cluster.port}\n"
        f"unix_socket_directories = '{quoted}'\n"
    )
    _give(conf)
    log = folder / "postgres.log"
    log.touch()
    _give(log)
    started = False
    try:
        _run(
            [pg_ctl, "start", "-D", str(cluster.pgdata), "-l", str(log), "-w",
             "-t", str(int(timeout))],
            cwd=folder, what=f"pg_ctl start (see {log})",
        )  # fmt: skip
        started = True
        cluster.pid = int((cluster.pgdata / "postmaster.pid").read_text().split()[0])
        _ensure_database(cluster, timeout)
        yield cluster
    finally:
        if started:
            stop = subprocess.run(
                _as_owner([pg_ctl, "stop", "-D", str(cluster.pgdata), "-m", "fast", "-w"]),
                cwd=folder, capture_output=True, text=True,
            )  # fmt: skip
            if stop.returncode != 0 and cluster.pid and _alive(cluster.pid):
                os.kill(cluster.pid, signal.SIGQUIT)  # immediate shutdown, our postmaster
        if temporary:
            shutil.rmtree(sockets, ignore_errors=True)


def _ensure_database(cluster: Cluster, timeout: float) -> None:
    """Wait until the cluster accepts connections, then create MLflow's database once."""
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = cluster.connect("postgres")
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        conn.close()


@dataclass
class Server:
    """A running shared server: ``uri`` is the tracking URI to give clients."""

    uri: str
    folder: Path
    cluster: Cluster
    process: subprocess.Popen

    @property
    def mlflow_pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None and _alive(self.cluster.pid)


def _secret(path: Path) -> str:
    """A random key kept in ``path`` (mode 0600), created on first use."""
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            if e.code == 401:  # basic-auth app: up, and asking for credentials
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServerError(f"mlflow server did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _stop_group(proc: subprocess.Popen) -> None:
    from foldwise.tracking import stop_group

    stop_group(proc)
    # gunicorn's workers share the group; make sure none outlives the master
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def shared_server(
    folder: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = 2,
    extra_args: Sequence[str] = (),
    timeout: float = 90,
) -> Iterator[Server]:
    """PostgreSQL + ``mlflow server`` on ``host:port`` (0: a free port); stopped on exit."""
    folder = folder.resolve()
    with postgres(folder, timeout=timeout) as cluster:
        port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        artifacts = folder / "artifacts"
        artifacts.mkdir(exist_ok=True)
        log = folder / "mlflow.log"
        env = {
            # basic-auth's CSRF key, the same in every gunicorn worker and across restarts
            "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret(folder / "flask-secret"),
            **os.environ,
            "PGPASSFILE": str(cluster.passfile),
            # no job-execution consumers (five ~240 MB processes this server doesn't need)
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        cmd = [
            str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server",
            "--host", host, "--port", str(port),
            "--backend-store-uri", cluster.store_uri,
            "--artifacts-destination", str(artifacts),
            "--workers", str(workers), "--gunicorn-opts", "--log-level warning",
            *extra_args,
        ]  # fmt: skip
        with open(log, "a") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=folder, env=env, start_new_session=True,
            )  # fmt: skip
        try:
            local = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
            uri = f"http://{local}:{port}"
            _wait_healthy(uri, proc, log, timeout)
            yield Server(uri=uri, folder=folder, cluster=cluster, process=proc)
        finally:
            _stop_group(proc)


def default_folder() -> Path:
    from foldwise.files import shared_root

    return shared_root() / ".foldwise" / "mlflow-server"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m foldwise.tracking.server",
        description="A shared MLflow tracking server over PostgreSQL; Ctrl-C stops it. "
        "Arguments it does not know go to `mlflow server` (e.g. --app-name basic-auth).",
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="cluster, artifacts and logs (default: <repo>/.foldwise/mlflow-server)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface mlflow binds (default: this machine)"
    )
    parser.add_argument("--port", type=int, default=5000, help="0: any free port")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args, extra = parser.parse_known_args(argv)
    folder = args.folder or default_folder()

    def terminate(signum, frame):
        # once: a second Ctrl-C must not cut the shutdown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, terminate)
    signal.signal(signal.SIGTERM, terminate)
    try:
        with shared_server(folder, args.host, args.port, args.workers, extra) as server:
            print(f"MLflow tracking server over PostgreSQL, data in {server.folder}")
            print(f"  MLFLOW_TRACKING_URI={server.uri}")
            if args.host in ("0.0.0.0", "::"):
                there = f"http://{socket.getfqdn()}:{server.uri.rsplit(':', 1)[1]}"
                print(f"  from other machines: MLFLOW_TRACKING_URI={there}")
            if args.host not in ("127.0.0.1", "localhost", "::1"):
                print(
                    "  reachable beyond this machine: use --app-name basic-auth and a "
                    "TLS reverse proxy (docs/tracking.md: A shared tracking server)"
                )
            print(f"  logs: {server.folder / 'mlflow.log'}, {server.folder / 'postgres.log'}")
            print("Ctrl-C stops it; runs are kept for the next start.", flush=True)
            while server.running():
                time.sleep(1)
            print("a server process exited; see the logs above", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
