"""Private queue brokers of the faults suite, which it stops and restarts at will.

Other test runs on the machine use the shared Redis (6379) and RabbitMQ (5672); the
faults suite never touches those. It starts its own throw-away instances instead, on
free loopback ports, with their state in a temporary directory:

* :class:`PrivateRedis`: ``redis-server`` without any persistence (``--save ''
  --appendonly no``): a restart loses every queued message, the harshest restart a
  Redis broker can go through.
* :class:`PrivateRabbit`: a RabbitMQ node of its own (``RABBITMQ_NODENAME``, ports,
  Mnesia and log directories, Erlang cookie in its own ``HOME``, no plugins). A
  restart is a clean ``rabbitmqctl shutdown`` and a new start on the same Mnesia
  directory: durable queues and persistent messages survive, as in production.
  Its heartbeat timeout is :data:`AMQP_HEARTBEAT` seconds.

Each broker gives the ``[app:main]`` options pointing a site at it
(:meth:`site_options`).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import pika
import redis

from tests.support.site import _tail, free_port

#: How long a broker may take to accept connections after a start.
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
#: Heartbeat timeout (s) the private RabbitMQ proposes (``HARVEST_FAULTS_AMQP_HEARTBEAT``
#: overrides it; RabbitMQ's default is 60). RabbitMQ cuts a client that sends nothing
#: for three timeouts (180 s by default): at 15 s, the idle scenario's 75 s cover
#: them, so a consumer that stops answering heartbeats while idle is caught.
AMQP_HEARTBEAT = int(os.environ.get("HARVEST_FAULTS_AMQP_HEARTBEAT") or 15)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _terminate(process: Optional[subprocess.Popen[bytes]]) -> None:
    """End a process group we started (SIGTERM, then SIGKILL)."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


class Broker:
    """Common life cycle: ``start``, ``stop``, ``restart``, ``close``."""

    backend = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.starts = 0
        self.restarts = 0

    def site_options(self) -> dict[str, str]:
        raise NotImplementedError

    def _command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Ask the running server to exit."""
        raise NotImplementedError

    def _environment(self) -> Optional[dict[str, str]]:
        return None

    def start(self) -> Broker:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        log = self.directory / f"{self.backend}-{self.starts}.log"
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, env=self._environment(), cwd=self.directory,
                start_new_session=True)
        self._wait_until_up(log)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._shutdown()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _terminate(self.process)

    def ping(self) -> bool:
        raise NotImplementedError

    def restart(self, down_seconds: float = 0.0) -> float:
        """Stop the broker, leave it down ``down_seconds``, start it again.

        :returns: the seconds it was unreachable
        """
        stopped = time.monotonic()
        self.stop()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1
        return time.monotonic() - stopped

    def close(self) -> None:
        self.stop()

    def _wait_until_up(self, log: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.backend} broker exited "
                                   f"({self.process.returncode}):\n{_tail(log)}")
            if _port_open(self.port) and self.ping():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.backend} broker not up after {START_TIMEOUT:.0f} s:\n"
                           + _tail(log))


class PrivateRedis(Broker):
    """``redis-server`` on a free port, no persistence, restartable."""

    backend = "redis"

    def site_options(self) -> dict[str, str]:
        # With a harvest hostname set, the queues ignore ckan.redis.url (which the
        # environment of the subprocesses pins to the shared Redis).
        return {"ckan.harvest.mq.hostname": "127.0.0.1",
                "ckan.harvest.mq.port": str(self.port),
                "ckan.harvest.mq.redis_db": "0"}

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                           socket_timeout=10)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def _command(self) -> list[str]:
        return [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory), "--daemonize", "no"]

    def _shutdown(self) -> None:
        """``SHUTDOWN NOSAVE``: whatever the queues held is gone."""
        try:
            self.client().shutdown(nosave=True)
        except redis.RedisError:
            pass  # the connection drops as the server exits


class PrivateRabbit(Broker):
    """A private RabbitMQ node (its own name, ports, Mnesia, logs and cookie)."""

    backend = "amqp"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.dist_port = free_port()
        self.node = f"faults-{secrets.token_hex(3)}@localhost"
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq.conf").write_text(f"heartbeat = {AMQP_HEARTBEAT}\n")
        self.env = dict(
            os.environ,
            HOME=str(directory),  # the Erlang cookie of the node and of rabbitmqctl
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(directory / "mnesia"),
            RABBITMQ_LOG_BASE=str(directory / "log"),
            RABBITMQ_PID_FILE=str(directory / "rabbit.pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(directory / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(directory / "rabbitmq.conf"),
        )

    def site_options(self) -> dict[str, str]:
        return {"ckan.harvest.mq.hostname": "127.0.0.1",
                "ckan.harvest.mq.port": str(self.port)}

    def connection(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=self.port, connection_attempts=1,
            socket_timeout=10, blocked_connection_timeout=30))

    def ping(self) -> bool:
        try:
            self.connection().close()
            return True
        except pika.exceptions.AMQPError:
            return False

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RABBITMQCTL), "-n", self.node, *args],
                              capture_output=True, text=True, env=self.env,
                              timeout=STOP_TIMEOUT, stdin=subprocess.DEVNULL)

    def _command(self) -> list[str]:
        return [str(RABBITMQ_SERVER)]

    def _environment(self) -> Optional[dict[str, str]]:
        return self.env

    def _shutdown(self) -> None:
        """A clean shutdown of the node (durable queues are kept on disk)."""
        self.ctl("shutdown")


def make_broker(backend: str, directory: Path) -> Broker:
    if backend == "redis":
        return PrivateRedis(directory)
    if not RABBITMQ_SERVER.exists():
        raise RuntimeError(f"{RABBITMQ_SERVER} is missing: install rabbitmq-server "
                           "(dev/services.sh)")
    return PrivateRabbit(directory)
