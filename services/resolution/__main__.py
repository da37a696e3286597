"""python -m services.resolution {serve,migrate,create-agent}"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from services.resolution import agents
from services.resolution.app import MIGRATIONS, SCHEMA, create_app
from services.resolution.settings import ResolutionSettings
from shared.cli import add_common_commands, run_common_command
from shared.db import connect
from shared.runtime import migrate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.resolution")
    sub = parser.add_subparsers(dest="command", required=True)
    add_common_commands(sub)
    create = sub.add_parser("create-agent", help="register a back-office agent; prints its token")
    create.add_argument("name")
    create.add_argument("--approver", action="store_true", help="may approve large refunds")
    args = parser.parse_args(argv)
    settings = ResolutionSettings()

    if args.command == "create-agent":
        migrate(settings, SCHEMA, MIGRATIONS)
        print(json.dumps(asyncio.run(_create_agent(settings, args.name, args.approver))))
        return 0
    return run_common_command(args.command, settings, SCHEMA, MIGRATIONS, create_app)


async def _create_agent(settings: ResolutionSettings, name: str, approver: bool) -> dict[str, str]:
    conn = await connect(settings.database_url, SCHEMA)
    try:
        return await agents.create_agent(conn, name=name, approver=approver)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
