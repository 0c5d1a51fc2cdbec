"""A single-node Apache Kafka (KRaft) broker for machines without Docker.

The broker jars come from Maven Central (org.apache.kafka:kafka_2.13) into a cache, so the only
requirements are Java 17+ and Maven. `up` is idempotent and returns only once the broker answers
metadata requests; `down` stops it with SIGTERM (a clean controlled shutdown), then SIGKILL after a
deadline. Logs go to a file in the cache, never to the terminal.

Configured by a `LocalKafka` value; the `kafka` command (connectors/cli/kafka.py) fills it from BWSM_KAFKA_VERSION,
BWSM_KAFKA_PORT, BWSM_KAFKA_CONTROLLER_PORT, BWSM_CACHE_DIR, BWSM_KAFKA_HEAP and BWSM_MAVEN_REPO.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

DEFAULT_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"

POM_TEMPLATE = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.bytewax-speechmatics</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J_TEMPLATE = """rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={log}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
"""

SERVER_TEMPLATE = """process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


class BrokerError(BytewaxSpeechmaticsError, RuntimeError):
    """The local broker could not be prepared, started or stopped."""


@dataclass(frozen=True)
class LocalKafka:
    """Where one local broker keeps its jars, data, config, pid and log."""

    version: str = DEFAULT_VERSION
    port: int = 9092
    controller_port: int = 9093
    cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "bytewax-speechmatics")
    heap: str = "1g"
    maven_repo: str | None = None  # Maven's local repository; None = Maven's own (~/.m2/repository)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def libs(self) -> Path:
        return self.cache / f"kafka-{self.version}" / "libs"

    @property
    def run_dir(self) -> Path:
        return self.cache / f"kafka-run-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "broker.log"


def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a broker at `bootstrap` answers a metadata request."""
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError:
        return False
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure means "not answering yet"
        return False
    return True


def resolve_jars(kafka: LocalKafka) -> Path:
    """Download the broker jars and their dependencies from Maven Central, once."""
    done = kafka.libs / ".complete"
    if done.exists():
        return kafka.libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is not on PATH: it is needed to fetch the Kafka broker jars")
    work = kafka.libs.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(POM_TEMPLATE.format(kafka=kafka.version, log4j=LOG4J_VERSION))
    print(f"kafka: resolving org.apache.kafka:kafka_2.13:{kafka.version} from Maven Central ...", flush=True)
    repo = [f"-Dmaven.repo.local={kafka.maven_repo}"] if kafka.maven_repo else []
    proc = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(work / "pom.xml"), *repo, "dependency:copy-dependencies",
         f"-DoutputDirectory={kafka.libs}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise BrokerError(f"Maven could not resolve the Kafka jars:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    done.write_text(kafka.version)
    return kafka.libs


def _java(kafka: LocalKafka, *args: str, log4j: Path) -> list[str]:
    return ["java", f"-Xmx{kafka.heap}", "-cp", f"{kafka.libs}/*",
            f"-Dlog4j2.configurationFile={log4j}", *args]


def prepare_storage(kafka: LocalKafka) -> Path:
    """Write the broker config and format KRaft storage on first use."""
    run = kafka.run_dir
    data = run / "data"
    run.mkdir(parents=True, exist_ok=True)
    config = run / "server.properties"
    config.write_text(SERVER_TEMPLATE.format(port=kafka.port, cport=kafka.controller_port, data=data))
    log4j = run / "log4j2.properties"
    log4j.write_text(LOG4J_TEMPLATE.format(log=kafka.log_file))
    if not (data / "meta.properties").exists():
        proc = subprocess.run(
            _java(kafka, *format_storage_args(random_cluster_id(), config), log4j=log4j),
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")
    return config


def format_storage_args(cluster_id: str, config: Path) -> list[str]:
    """StorageTool's `format` arguments; the id goes as `--cluster-id=ID`, because an id beginning with `-`
    given as a separate word is read by kafka-storage as an option ("expected one argument")."""
    return ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config), "--standalone"]


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own `Uuid.randomUuid()`, ids beginning with `-` are drawn again (one in 64 would), so the id
    is also safe in any command line or tool that reads a leading dash as an option.
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _read_pid(kafka: LocalKafka) -> int | None:
    try:
        pid = int(kafka.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    """The process runs. A broker this process started and that has ended stays a zombie until reaped (which
    `os.kill(pid, 0)` cannot tell from a live one): reap it here."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != pid
    except ChildProcessError:  # not our child: its parent (init) reaps it
        return True


def up(kafka: LocalKafka, timeout: float = 180.0) -> str:
    """Start the broker unless one answers already; return its bootstrap address.

    Two `up` at once (two shells, two test processes) start one broker: the second waits on a lock in the run
    directory until the first's broker answers, then finds it answering.
    """
    if _already_up(kafka):
        return kafka.bootstrap
    if shutil.which("java") is None:
        raise BrokerError("Java 17+ is not on PATH: it is needed to run the Kafka broker")
    started = time.monotonic()
    kafka.run_dir.mkdir(parents=True, exist_ok=True)
    with open(kafka.run_dir / "up.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
        return kafka.bootstrap if _already_up(kafka) else _start(kafka, started, timeout)


def _already_up(kafka: LocalKafka) -> bool:
    """A broker answers on the bootstrap address (said so): nothing to start."""
    if not broker_answers(kafka.bootstrap):
        return False
    print(f"kafka: a broker already answers on {kafka.bootstrap}", flush=True)
    return True


def _start(kafka: LocalKafka, started: float, timeout: float) -> str:
    """Start the broker (unless its process already runs) and wait until it answers."""
    resolve_jars(kafka)
    config = prepare_storage(kafka)
    if _read_pid(kafka) is None:
        with open(kafka.log_file.with_suffix(".stdout"), "ab") as out:
            proc = subprocess.Popen(
                _java(kafka, "kafka.Kafka", str(config), log4j=kafka.run_dir / "log4j2.properties"),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        kafka.pid_file.write_text(str(proc.pid))
    deadline = started + timeout
    while time.monotonic() < deadline:
        if broker_answers(kafka.bootstrap, timeout=1.0):
            print(f"kafka: broker up on {kafka.bootstrap} in {time.monotonic() - started:.1f}s "
                  f"(log: {kafka.log_file})", flush=True)
            return kafka.bootstrap
        if _read_pid(kafka) is None:
            raise BrokerError(f"the broker exited during start-up; see {kafka.log_file}")
        time.sleep(0.25)
    raise BrokerError(f"the broker did not answer on {kafka.bootstrap} within {timeout:.0f}s; see {kafka.log_file}")


def down(kafka: LocalKafka, timeout: float = 30.0) -> bool:
    """Stop the broker this script started; True if one was running."""
    pid = _read_pid(kafka)
    if pid is None:
        print("kafka: no broker started by this script is running", flush=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _read_pid(kafka) is not None:
        time.sleep(0.2)
    if _read_pid(kafka) is not None:
        os.kill(pid, signal.SIGKILL)
    kafka.pid_file.unlink(missing_ok=True)
    print(f"kafka: broker on {kafka.bootstrap} stopped", flush=True)
    return True
