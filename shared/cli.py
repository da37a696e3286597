"""The commands every service shares: `serve` and `migrate`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from shared.logging import configure_logging
from shared.runtime import migrate
from shared.service_app import serve
from shared.settings import ServiceSettings


def add_common_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub.add_parser("serve", help="run the service (HTTP, consumers, outbox relay)")
    sub.add_parser("migrate", help="apply this service's schema migrations")


def run_common_command(
    command: str,
    settings: ServiceSettings,
    schema: str,
    migrations_dir: Path,
    create_app: Callable[[ServiceSettings], FastAPI],
) -> int:
    if command == "serve":
        # Before the migrations: what they log is masked and rendered like the rest.
        configure_logging(settings.log_level, settings.log_format)
        migrate(settings, schema, migrations_dir)
        serve(create_app(settings), settings)
        return 0
    if command == "migrate":
        applied = migrate(settings, schema, migrations_dir)
        print(f"{schema}: {applied} migration(s) applied")
        return 0
    raise ValueError(f"unknown command {command}")
