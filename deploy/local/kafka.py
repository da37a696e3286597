"""Apache Kafka for the local stack and the test suite: one KRaft node started with `java`.

- The broker's jars come from Maven Central through `deploy/kafka/pom.xml`
  (`mvn dependency:copy-dependencies`), once, into `.cache/kafka-<version>/`.
- `start_kafka(port, work_dir)` writes `server.properties` (broker and controller in one
  process, replication factor 1, no initial rebalance delay, no auto-created topics),
  formats the KRaft log directory `work_dir/data` on first use and starts the broker in
  its own process group. The log stays on disk: a restart keeps every message.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POM = ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = ROOT / "deploy" / "kafka" / "log4j2.yaml"
PROCESS_MARKER = "kafka.Kafka"  # the main class: how `stack` recognises our broker
HEAP = os.environ.get("LOCAL_KAFKA_HEAP", "-Xmx512m")


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:
        raise RuntimeError(f"no <kafka.version> in {POM}")
    return match.group(1)


def jars_dir() -> Path:
    return ROOT / ".cache" / f"kafka-{kafka_version()}"


def ensure_jars() -> Path:
    """The folder holding the broker's jars, fetched with Maven when missing."""
    target = jars_dir()
    if any(target.glob("kafka_2.13-*.jar")):
        return target
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise SystemExit(
            "Apache Kafka needs Java 17+ and Maven (to fetch its jars); install them or set "
            "KAFKA_BOOTSTRAP_SERVERS to a running broker"
        )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(  # noqa: S603 - Maven with our own pom
        [
            *("mvn", "-q", "-B", "-f", str(POM)),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
        ],
        check=True,
    )
    partial.rename(target)  # whole or not at all: an interrupted fetch is retried
    return target


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never the same one twice in this process: the
    kernel may give a port just released to the next bind(0), and two services of one
    stack handed the same port would see one of them fail to start."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def server_properties(port: int, controller_port: int, log_dir: Path) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={log_dir}",
            # The project creates its topics explicitly, six partitions each.
            "auto.create.topics.enable=false",
            "num.partitions=6",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # A week of events, like the compose stack; segments small enough to roll.
            "log.retention.hours=168",
            "log.segment.bytes=67108864",
            "",
        ]
    )


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def java_command(jars: Path, main_class: str, *args: str) -> list[str]:
    return [
        "java",
        HEAP,
        "-XX:+ExitOnOutOfMemoryError",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        f"{jars}/*",
        main_class,
        *args,
    ]


def prepare(port: int, work_dir: Path) -> Path:
    """Writes the config and formats the log directory once; returns the config path.

    The controller keeps the port it was formatted with (the quorum names it), so a
    restart of the same directory finds its controller again."""
    jars = ensure_jars()
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "server.properties"
    log_dir = work_dir / "data"
    formatted = (log_dir / "meta.properties").exists()
    known = (
        re.search(r"controller.quorum.voters=1@127.0.0.1:(\d+)", config.read_text())
        if (formatted and config.exists())
        else None
    )
    controller_port = int(known.group(1)) if known else free_port()
    config.write_text(server_properties(port, controller_port, log_dir))
    if not formatted:
        # "=" form: a random id may begin with "-", which would read as an option.
        format_command = ("format", f"--cluster-id={cluster_id()}", "-c", str(config))
        subprocess.run(  # noqa: S603 - Kafka's own storage tool
            java_command(jars, "kafka.tools.StorageTool", *format_command),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return config


def start_kafka(port: int, work_dir: Path, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Apache Kafka on 127.0.0.1:`port`, its log directory under `work_dir`."""
    config = prepare(port, work_dir)
    with (log_file or work_dir / "kafka.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - the broker we fetched
            java_command(ensure_jars(), PROCESS_MARKER, str(config)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops the JVM
        )
