"""`python -m threadgate serve | keys create|list|revoke | account show|set-budget | sweep`."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal

from threadgate.config import get_settings


def _runtime():
    from threadgate.bootstrap import check_master_key
    from threadgate.runtime import get_runtime

    check_master_key(get_settings())  # before the runtime creates the data directory
    return get_runtime()


def _account_id(rt) -> str:
    from threadgate.bootstrap import ensure_first_admin

    ensure_first_admin(rt.stores, rt.clock, rt.settings)
    return rt.stores.keys.first_account().id


def _configure_logging() -> None:
    # Before any third-party import: some (wordllama) call basicConfig(level=INFO) on import,
    # which would log every upstream request line. Ours first makes theirs a no-op.
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def serve(args: argparse.Namespace) -> int:
    _configure_logging()
    import uvicorn

    from threadgate.bootstrap import ensure_first_admin

    settings = get_settings()
    rt = _runtime()
    secret = ensure_first_admin(rt.stores, rt.clock, settings)
    if secret:
        print("\n  First start: created the admin (master) key. It is shown ONCE; store it now:\n")
        print(f"    {secret}\n", flush=True)
    host, port = args.host or settings.host, args.port or settings.port
    print(f"Threadgate on http://{host}:{port}  (data: {settings.data_dir}, mode: {settings.mode})", flush=True)
    from threadgate.api.connection_limits import uvicorn_options

    # The access log is uvicorn's one line per request (method, path, status): no headers, no bodies.
    uvicorn.run("threadgate.api.asgi:app", host=host, port=port, log_level="info", access_log=True,
                **uvicorn_options())
    return 0


def keys_create(args: argparse.Namespace) -> int:
    from threadgate.api.routes.keys import mint_key
    from threadgate.api.schemas import KeyCreate

    rt = _runtime()
    body = KeyCreate(
        name=args.name,
        scope="admin" if args.admin else "standard",
        max_spend_usd=float(Decimal(args.max_spend)) if args.max_spend is not None else None,
        end_user_id=args.end_user,
    )
    key, secret = mint_key(rt, _account_id(rt), body)
    print(json.dumps({"id": key.id, "secret": secret, "prefix": key.prefix, "scope": key.scope,
                      "end_user_id": key.end_user_id, "cap_micros": key.cap_micros}, indent=2, ensure_ascii=False))
    return 0


def keys_list(args: argparse.Namespace) -> int:
    rt = _runtime()
    for k in rt.stores.keys.list_keys(_account_id(rt)):
        cap = "unlimited" if k.cap_micros is None else f"${Decimal(k.cap_micros) / 1_000_000}"
        state = "revoked" if k.revoked else "active"
        end_user = f"end user {k.end_user_id}" if k.end_user_id else "unbound"
        print(f"{k.id}  {k.prefix}  {k.scope:8}  {state:7}  spent ${Decimal(k.spent_micros) / 1_000_000} of {cap}"
              f"  {end_user}  {k.name}")
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    from threadgate.api.routes.keys import active_admin_keys
    from threadgate.domain.errors import Conflict
    from threadgate.domain.keys import check_revocable

    rt = _runtime()
    account_id = _account_id(rt)
    target = rt.stores.keys.get_key(account_id, args.key_id)
    if target is None or target.revoked:
        print("not found (or already revoked)")
        return 1
    try:
        check_revocable(target, by_key_id=None, active_admin_keys=active_admin_keys(rt, account_id))
    except Conflict as refused:
        print(f"not revoked: {refused.message}")
        return 1
    rt.stores.keys.revoke_key(account_id, target.id, rt.clock.now_ms())
    print("revoked")
    return 0


def account_set_budget(args: argparse.Namespace) -> int:
    from threadgate.domain.catalog import usd_to_micros

    rt = _runtime()
    cap = None if args.usd.lower() in ("none", "unlimited") else usd_to_micros(args.usd)
    account = rt.stores.keys.update_account(_account_id(rt), cap_micros=cap)
    print(json.dumps({"id": account.id, "cap_micros": account.cap_micros, "spent_micros": account.spent_micros},
                     ensure_ascii=False))
    return 0


def sweep(args: argparse.Namespace) -> int:
    from threadgate.domain.metering import sweep_expired

    rt = _runtime()
    print(f"settled {sweep_expired(rt.stores.ledger, rt.clock)} expired reservations")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threadgate")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the gateway (uvicorn)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=serve)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("create")
    p.add_argument("--name", required=True)
    p.add_argument("--max-spend", help="lifetime cap in USD (default: unlimited)")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--end-user", help="bind the key to one end user")
    p.set_defaults(func=keys_create)
    keys.add_parser("list").set_defaults(func=keys_list)
    p = keys.add_parser("revoke")
    p.add_argument("key_id")
    p.set_defaults(func=keys_revoke)

    account = sub.add_parser("account", help="the account budget").add_subparsers(dest="account_command", required=True)
    p = account.add_parser("set-budget")
    p.add_argument("usd", help="USD amount, or 'unlimited'")
    p.set_defaults(func=account_set_budget)
    sub.add_parser("sweep", help="settle expired reservations now").set_defaults(func=sweep)

    args = parser.parse_args(argv)
    from threadgate.bootstrap import StartRefused

    try:
        return args.func(args)
    except StartRefused as refused:
        print(f"threadgate: {refused}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
