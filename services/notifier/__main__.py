"""python -m services.notifier {serve,migrate}"""

from __future__ import annotations

import argparse
import sys

from services.notifier.app import MIGRATIONS, SCHEMA, create_app
from services.notifier.settings import NotifierSettings
from shared.cli import add_common_commands, run_common_command


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notifier")
    sub = parser.add_subparsers(dest="command", required=True)
    add_common_commands(sub)
    args = parser.parse_args(argv)
    return run_common_command(args.command, NotifierSettings(), SCHEMA, MIGRATIONS, create_app)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
