"""python -m services.intake {serve,migrate,create-tenant,rotate-key}"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from datetime import timedelta

from services.intake import tenants
from services.intake.app import MIGRATIONS, SCHEMA, create_app
from services.intake.settings import IntakeSettings
from shared.cli import add_common_commands, run_common_command
from shared.db import connect
from shared.runtime import migrate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.intake")
    sub = parser.add_subparsers(dest="command", required=True)
    add_common_commands(sub)
    create = sub.add_parser("create-tenant", help="register a wallet app; prints its API key")
    create.add_argument("name")
    create.add_argument("--webhook-url", required=True)
    create.add_argument("--jurisdiction", choices=tenants.JURISDICTIONS, default="cn")
    create.add_argument("--locale", choices=tenants.LOCALES, default="zh-CN")
    rotate = sub.add_parser("rotate-key", help="issue a new API key; old ones expire later")
    rotate.add_argument("tenant_id", type=uuid.UUID)
    rotate.add_argument("--overlap-hours", type=float, default=24.0)
    args = parser.parse_args(argv)
    settings = IntakeSettings()

    if args.command in ("create-tenant", "rotate-key"):
        migrate(settings, SCHEMA, MIGRATIONS)
        try:
            result = asyncio.run(_admin(args, settings))
        except ValueError as exc:  # bad input: a message, not a traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(result))
        return 0
    return run_common_command(args.command, settings, SCHEMA, MIGRATIONS, create_app)


async def _admin(args: argparse.Namespace, settings: IntakeSettings) -> dict[str, object]:
    conn = await connect(settings.database_url, SCHEMA)
    try:
        if args.command == "create-tenant":
            return await tenants.create_tenant(
                conn,
                name=args.name,
                webhook_url=args.webhook_url,
                jurisdiction=args.jurisdiction,
                locale=args.locale,
                webhook_master_key=settings.webhook_master_key,
            )
        return await tenants.rotate_key(
            conn, tenant_id=args.tenant_id, overlap=timedelta(hours=args.overlap_hours)
        )
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
