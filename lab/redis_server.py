"""A real redis-server for the tests: SONiC's layout, a unix socket in a temp dir, no TCP.

Started and stopped by pid (never by name), killed when it does not stop, and restartable on the
same socket with an empty dataset, which is what a restarted SONiC database looks like to a
client that had no persistence configured.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

# SONiC's database_config.json for a single instance (sonic-buildimage's default layout).
SONIC_DATABASES = {
    "APPL_DB": (0, ":"),
    "ASIC_DB": (1, ":"),
    "COUNTERS_DB": (2, ":"),
    "LOGLEVEL_DB": (3, ":"),
    "CONFIG_DB": (4, "|"),
    "FLEX_COUNTER_DB": (5, ":"),
    "STATE_DB": (6, "|"),
    "SNMP_OVERLAY_DB": (7, "|"),
    "APPL_STATE_DB": (14, ":"),
}


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.socket = workdir / "redis.sock"
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_database_config(self) -> Path:
        path = self.dir / "database_config.json"
        path.write_text(json.dumps({
            "INSTANCES": {
                "redis": {
                    "hostname": "127.0.0.1",
                    "port": 6379,
                    "unix_socket_path": str(self.socket),
                    "persistence_for_warm_boot": "yes",
                }
            },
            "DATABASES": {
                name: {"id": db_id, "separator": sep, "instance": "redis"}
                for name, (db_id, sep) in SONIC_DATABASES.items()
            },
            "VERSION": "1.0",
        }, indent=2))
        return path

    def start(self) -> None:
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError(
                "redis-server is not installed: apt-get install -y redis-server "
                "(the SONiC backend's tests run against a real one)"
            )
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", "0",  # no TCP at all
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.dir),
                "--save", "",  # no dump: a restart comes back empty
                "--appendonly", "no",
                "--databases", "16",
                "--notify-keyspace-events", "AKE",  # as SONiC's redis.conf
                "--logfile", str(self.log),
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   f"{self.log.read_text() if self.log.exists() else ''}")
            try:
                client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except (redis.ConnectionError, FileNotFoundError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not answer within 10 s")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart_empty(self) -> None:
        """Crash (SIGKILL) and start again on the same socket with nothing in it."""
        self.stop(signal.SIGKILL)
        self.socket.unlink(missing_ok=True)
        self.start()

    def sync_client(self, db: int) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), db=db, decode_responses=True)
