"""python -m services.resolution {serve,migrate,create-agent}"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from services.resolution import agents
from services.resolution.app import MIGRATIONS, SCHEMA, create_app
from services.resolution.settings import ResolutionSettings
from shared.cli import add_common_commands, run_common_command
from shared.db import connect
from shared.runtime import migrate


def _tenant(value: str) -> uuid.UUID:
    try:
        return agents.parse_tenant_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.resolution")
    sub = parser.add_subparsers(dest="command", required=True)
    add_common_commands(sub)
    create = sub.add_parser(
        "create-agent", help="register a back-office agent of one tenant; prints its token"
    )
    create.add_argument("name")
    create.add_argument(
        "--tenant",
        required=True,
        type=_tenant,
        metavar="TENANT_ID",
        help="the tenant (wallet app) the agent works for: the tenant_id create-tenant printed",
    )
    create.add_argument("--approver", action="store_true", help="may approve large refunds")
    args = parser.parse_args(argv)
    settings = ResolutionSettings()

    if args.command == "create-agent":
        if not args.name.strip():
            parser.error("NAME must not be empty")
        migrate(settings, SCHEMA, MIGRATIONS)
        issued = asyncio.run(_create_agent(settings, args.name, args.tenant, args.approver))
        print(json.dumps(issued))
        return 0
    return run_common_command(args.command, settings, SCHEMA, MIGRATIONS, create_app)


async def _create_agent(
    settings: ResolutionSettings, name: str, tenant_id: uuid.UUID, approver: bool
) -> dict[str, str]:
    conn = await connect(settings.database_url, SCHEMA, purpose="cli")
    try:
        return await agents.create_agent(conn, name=name, approver=approver, tenant_id=tenant_id)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
