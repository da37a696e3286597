"""python -m services.triage {serve,migrate,classify FILE}"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.triage.app import MIGRATIONS, SCHEMA, create_app
from services.triage.classifier import Classifier
from services.triage.classify_cli import classify_lines
from services.triage.rules import load_rules
from services.triage.settings import TriageSettings
from shared.cli import add_common_commands, run_common_command


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.triage")
    sub = parser.add_subparsers(dest="command", required=True)
    add_common_commands(sub)
    classify = sub.add_parser("classify", help="classify JSON Lines (CONTRACT section 5)")
    classify.add_argument("file", help="JSON Lines file, or - for stdin")
    args = parser.parse_args(argv)
    settings = TriageSettings()

    if args.command == "classify":
        classifier = Classifier(load_rules(settings.rules_file))
        if args.file == "-":
            errors = classify_lines(sys.stdin, sys.stdout, classifier)
        else:
            with Path(args.file).open(encoding="utf-8") as lines:
                errors = classify_lines(lines, sys.stdout, classifier)
        return 1 if errors else 0
    return run_common_command(args.command, settings, SCHEMA, MIGRATIONS, create_app)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
