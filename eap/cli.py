"""`eap` — run and administer the platform.

    eap up [--api-port 8000] [--dagster-port 3000] [--local-model]
    eap db upgrade | check
    eap serve api|dagster-webserver|dagster-daemon|code-server [--host H] [--port P] [--workers N] [--code-server H:P]
    eap seed [--tenant NAME] [--admin admin] [--samples] [--samples-dir DIR]
    eap tenant create NAME
    eap token --tenant NAME --role admin|operator|viewer [--user U] [--groups g1,g2]
    eap ingest PATH... --tenant NAME [--classification II] [--acl g1,g2] [--no-wait] [--idle-timeout S]
    eap ask "QUESTION" [--tenant default] [--role viewer] [--groups g1,g2] [--user cli] [--conversation ID] [--json]
    eap user set-password --tenant NAME --username U --role R   (password on stdin)
"""

from __future__ import annotations

import argparse
import os
import sys

from core.enums import Role
from core.errors import ConfigurationError, PlatformError

ROLES = [r.value for r in Role]  # --role choices: admin, operator, viewer


def _offline_env() -> None:
    # Belt and braces for the air-gapped site: libraries that would phone home stay quiet.
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }.items():
        os.environ.setdefault(key, value)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 1-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eap", description="Enterprise Agent Platform")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start database, Dagster webserver + daemon and the API")
    up.add_argument("--api-port", type=_port, default=None, help="API port (default 8000)")
    up.add_argument("--dagster-port", type=_port, default=None, help="Dagster UI port (default 3000)")
    up.add_argument("--mes-simulator", action="store_true",
                    help="start the MES simulator on loopback and point the default tenant at it (demo)")
    up.add_argument("--local-model", action="store_true",
                    help="serve SmolLM2 with llama.cpp behind the LiteLLM proxy on loopback and point every model "
                         "tier at it (dev extras; default: the extractive responder)")
    up.add_argument("--sap-simulator", action="store_true",
                    help="start the SAP OData v2 simulator on loopback and connect the default tenant (demo)")

    db = sub.add_parser("db", help="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    dbsub.add_parser("upgrade", help="create roles/databases and apply migrations")
    dbsub.add_parser("check", help="report server, pgvector and migration state; exit 1 unless current")
    dbsub.add_parser("backup", help="dump the database(s) and the file store into an empty folder").add_argument(
        "folder")
    dbsub.add_parser("restore", help="restore a backup folder into an empty database and file store").add_argument(
        "folder")

    serve = sub.add_parser("serve", help="run one platform process in the foreground (containers, systemd)")
    serve.add_argument("component", choices=["api", "dagster-webserver", "dagster-daemon", "code-server"])
    serve.add_argument("--host", default=None, help="bind address (default EAP_API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=None, help="port (api 8000, dagster-webserver 3000, "
                       "code-server 4000)")
    serve.add_argument("--workers", type=int, default=1, help="API worker processes (default 1)")
    serve.add_argument("--code-server", default=None, help="HOST:PORT of `eap serve code-server` (Dagster "
                       "webserver/daemon; default: load the code in process)")

    seed = sub.add_parser("seed", help="create the tenant and its admin account; optionally submit samples")
    seed.add_argument("--tenant", default=None, help="tenant name (default EAP_DEFAULT_TENANT, 'default')")
    seed.add_argument("--admin", default="admin", help="admin username (default admin)")
    seed.add_argument("--samples", action="store_true", help="also submit the bundled sample documents")
    seed.add_argument("--samples-dir", default=None, help="submit the documents in this folder")

    tenant = sub.add_parser("tenant", help="tenants")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True)
    tc = tsub.add_parser("create", help="create a tenant (idempotent)")
    tc.add_argument("name")
    tc.add_argument("--display-name")

    ing = sub.add_parser("ingest", help="submit files/folders for ingestion and wait for the pipeline")
    ing.add_argument("paths", nargs="+")
    ing.add_argument("--tenant", required=True)
    ing.add_argument("--classification", default="II", help="I, II, III or IV (default II)")
    ing.add_argument("--acl", default=None, help="comma-separated need-to-know groups (required for III/IV)")
    ing.add_argument("--no-wait", action="store_true", help="return after submitting")
    ing.add_argument("--timeout", type=float, default=None,
                     help="give up after this many seconds in total (default: no limit while progress is made)")
    ing.add_argument("--idle-timeout", type=float, default=900.0,
                     help="give up after this many seconds without progress (default 900)")

    ask = sub.add_parser("ask", help="ask a question; prints the answer and its citations")
    ask.add_argument("question")
    ask.add_argument("--tenant", default="default")
    ask.add_argument("--role", default="viewer", choices=ROLES)
    ask.add_argument("--groups", default="", help="comma-separated need-to-know groups")
    ask.add_argument("--k", type=int, default=6)
    ask.add_argument("--user", default="cli", help="subject the conversation and audit records belong to")
    ask.add_argument("--conversation", default=None, help="continue this conversation (id) of the same user")
    ask.add_argument("--json", action="store_true", help="print the answer as POST /v1/chat's JSON")

    user = sub.add_parser("user", help="local (break-glass) accounts")
    usub = user.add_subparsers(dest="user_command", required=True)
    uc = usub.add_parser("set-password", help="create/update a local account; reads the password from stdin")
    uc.add_argument("--tenant", required=True)
    uc.add_argument("--username", required=True)
    uc.add_argument("--role", required=True, choices=ROLES)
    uc.add_argument("--groups", default="")

    tok = sub.add_parser("token", help="mint a development HS256 token")
    tok.add_argument("--tenant", required=True)
    tok.add_argument("--role", required=True, choices=ROLES)
    tok.add_argument("--user", default=None, help="subject (default: <role>@<tenant>)")
    tok.add_argument("--groups", default="", help="comma-separated need-to-know groups")
    tok.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    _offline_env()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            from eap.up import run_up

            return run_up(api_port=args.api_port, dagster_port=args.dagster_port, mes_simulator=args.mes_simulator,
                          sap_simulator=args.sap_simulator, local_model=args.local_model)
        if args.command == "db":
            from eap.db import run_db

            return run_db(args.db_command, getattr(args, "folder", None))
        if args.command == "serve":
            from eap.serve import run_serve

            if args.workers < 1:
                raise ConfigurationError("--workers must be at least 1")
            return run_serve(args.component, args.host, args.port, args.workers, args.code_server)
        if args.command == "seed":
            from eap.seed import run_seed

            return run_seed(args.tenant, args.admin, args.samples, args.samples_dir)
        if args.command == "tenant":
            from core.db.database import bootstrap
            from identity.tenancy import create_tenant

            bootstrap()
            ref, created = create_tenant(args.name, args.display_name)
            print(f"tenant {ref.name} {'created' if created else 'exists'} id={ref.id}")
            return 0
        if args.command == "ingest":
            from eap.ingest import run_ingest

            return run_ingest(args.paths, args.tenant, args.classification, args.acl, not args.no_wait, args.timeout,
                              args.idle_timeout)
        if args.command == "ask":
            from eap.ask import run_ask

            return run_ask(args.question, args.tenant, args.role, args.groups, args.k, user=args.user,
                           conversation=args.conversation, as_json=args.json)
        if args.command == "user":
            from core.db.database import bootstrap
            from core.models import Role
            from identity.accounts import set_local_password
            from identity.tenancy import get_tenant

            bootstrap()
            password = sys.stdin.readline().rstrip("\n")
            groups = [g.strip() for g in args.groups.split(",") if g.strip()]
            enrol = set_local_password(get_tenant(args.tenant), args.username, Role(args.role), password, groups)
            print(f"local account {args.username} set (id={enrol.user_id})")
            if enrol.totp_uri:
                print(f"TOTP enrolment (admins must use it at login): {enrol.totp_uri}")
            return 0
        if args.command == "token":
            from core.db.database import bootstrap
            from core.models import Role
            from core.security import mint_token
            from core.settings import get_settings
            from identity.tenancy import get_tenant

            bootstrap()
            ref = get_tenant(args.tenant)
            groups = [g.strip() for g in args.groups.split(",") if g.strip()]
            role = Role(args.role)
            print(
                mint_token(
                    get_settings(),
                    tenant_id=ref.id,
                    tenant=ref.name,
                    role=role,
                    subject=args.user or f"{role.value}@{ref.name}",
                    groups=groups,
                    ttl_seconds=args.ttl,
                )
            )
            return 0
    except PlatformError as exc:
        print(f"eap: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
