"""python -m services.triage {serve,migrate,classify FILE,evaluate FILE,train}"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from services.triage import evaluate, labelled, train
from services.triage.app import MIGRATIONS, SCHEMA, create_app
from services.triage.classifier import Classifier
from services.triage.classify_cli import classify_lines
from services.triage.corrections import load_corrections
from services.triage.model import DEFAULT_MODEL_PATH
from services.triage.rules import load_rules
from services.triage.settings import TriageSettings
from shared.cli import add_common_commands, run_common_command


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.triage")
    sub = parser.add_subparsers(dest="command", required=True)
    add_common_commands(sub)
    classify = sub.add_parser("classify", help="classify JSON Lines (CONTRACT section 5)")
    classify.add_argument("file", help="JSON Lines file, or - for stdin")
    scoring = sub.add_parser("evaluate", help="score triage on labelled JSON Lines")
    scoring.add_argument("file", nargs="+", help="labelled JSON Lines files")
    scoring.add_argument("--json", action="store_true", help="print the summary as JSON")
    learning = sub.add_parser("train", help="fit the text model from labelled complaints")
    learning.add_argument(
        "--data",
        nargs="+",
        type=Path,
        default=list(labelled.DEFAULT_TRAINING_FILES),
        help="labelled JSON Lines files (default: the development part)",
    )
    learning.add_argument(
        "--corrections",
        action="store_true",
        help="also learn from agents' corrections in triage's database (DATABASE_URL)",
    )
    learning.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    learning.add_argument(
        "--cross-validate",
        type=int,
        metavar="K",
        help="instead of writing a model, print K-fold figures on the data",
    )
    learning.add_argument(
        "--validate",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="instead of writing a model, fit on --data and print the figures on FILE",
    )
    args = parser.parse_args(argv)
    settings = TriageSettings()

    if args.command == "classify":
        classifier = settings.classifier()
        if args.file == "-":
            errors = classify_lines(sys.stdin, sys.stdout, classifier)
        else:
            with Path(args.file).open(encoding="utf-8") as lines:
                errors = classify_lines(lines, sys.stdout, classifier)
        return 1 if errors else 0
    if args.command == "evaluate":
        report = evaluate.run(labelled.read_files(args.file), settings.classifier())
        print(json.dumps(report.summary()) if args.json else evaluate.render(report))
        return 0
    if args.command == "train":
        return _train(args, settings)
    return run_common_command(args.command, settings, SCHEMA, MIGRATIONS, create_app)


def _train(args: argparse.Namespace, settings: TriageSettings) -> int:
    examples = labelled.read_files(args.data)
    sources = [str(path) for path in args.data]
    if args.corrections:
        rows = asyncio.run(load_corrections(settings.database_url, SCHEMA))
        examples += labelled.from_rows(rows, "corrections")
        sources.append(f"corrections ({len(rows)})")
    rules = load_rules(settings.rules_file)
    if args.cross_validate:
        report = train.cross_validate(examples, rules, folds=args.cross_validate)
        print(evaluate.render(report))
        return 0
    model = train.fit(examples, settings.classifier_without_model(), sources=sources)
    if args.validate:
        classifier = Classifier(rules, model, settings.decision_policy())
        print(evaluate.render(evaluate.run(labelled.read_files(args.validate), classifier)))
        return 0
    model.save(args.out)
    print(f"wrote {args.out}: {len(examples)} examples, {len(model.classes)} categories")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
