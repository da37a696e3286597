"""CPU per unit of work that every complaint pays several times (`python -m bench.micro`):
one triage classification and one structured log line. Process CPU time, this process
alone, after a warm-up; no database or broker involved."""

from __future__ import annotations

import contextlib
import io
import time
import uuid
from collections.abc import Callable

import structlog

from bench.run import DESCRIPTIONS
from services.triage import labelled
from services.triage.classifier import Classifier, ComplaintFacts
from services.triage.rules import load_rules
from services.triage.settings import TriageSettings
from shared.logging import configure_logging, get_logger


def _cpu_ms(work: Callable[[int], None], times: int) -> float:
    for i in range(min(times, 200)):
        work(i)  # warm-up
    started = time.process_time()
    for i in range(times):
        work(i)
    return (time.process_time() - started) / times * 1000


def classify_ms(times: int = 3000) -> float:
    classifier = Classifier(load_rules())
    facts = [
        ComplaintFacts.from_mapping(
            {"description": text, "customer": {"id": "c-1"}, "channel": "app", "amount": "10.50"}
        )
        for text in DESCRIPTIONS
    ]
    return _cpu_ms(lambda i: classifier.classify(facts[i % len(facts)]), times)


def classify_1000_s() -> float:
    """CPU seconds (this process, one core) for 1,000 classifications by the service's
    own classifier, the rules and the shipped model, over the test part's complaints."""
    classifier = TriageSettings().classifier()
    examples = labelled.read_files([labelled.REPO_DATA / "triage_test.jsonl"])
    facts = [examples[i % len(examples)].facts for i in range(1000)]
    for item in facts[:100]:
        classifier.classify(item)  # warm-up
    started = time.process_time()
    for item in facts:
        classifier.classify(item)
    return round(time.process_time() - started, 3)


def log_line_us(times: int = 5000) -> float:
    """One `event_handled` line as the consumer writes it (JSON, masked, ids bound)."""
    configure_logging("INFO", "json", "triage")
    log = get_logger("bench.micro")
    ids = {
        "event_id": str(uuid.uuid4()),
        "event_type": "complaint.received",
        "ticket_no": "WC-20261202-000001",
        "correlation_id": str(uuid.uuid4()),
    }

    def line(i: int) -> None:
        with structlog.contextvars.bound_contextvars(**ids):
            log.info("event_handled", topic="complaints.received.v1", partition=3, offset=i)

    with contextlib.redirect_stdout(io.StringIO()):
        return _cpu_ms(line, times) * 1000


def main() -> None:
    print(f"triage classify: {classify_ms():.2f} ms CPU per complaint (rules alone)")
    print(f"triage classify 1,000 (rules + model): {classify_1000_s():.3f} s CPU")
    print(f"log line: {log_line_us():.0f} us CPU per line")


if __name__ == "__main__":
    main()
