"""`callpulse tenants …` and `callpulse keys …`: the operator's commands for tenants and API keys.

They talk to CALLPULSE_DATABASE_URL directly (each command is its own transaction) and print
machine-readable results on stdout, with `--format json` for scripts (JSON Lines, one object per
row). A key's secret is printed once, by `keys create`, and never by anything else."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from db.models import ApiKey, Tenant

SCOPE_CHOICES = ("read", "write", "admin")


def _csv(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",") if part.strip()]


def _when(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat(timespec="seconds")


def _table(header: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _emit(objects: list[dict[str, Any]], header: Sequence[str], fmt: str) -> None:
    if fmt == "json":
        for obj in objects:
            sys.stdout.write(json.dumps(obj) + "\n")
        return
    rows = [["-" if obj[h] is None else ",".join(obj[h]) if isinstance(obj[h], list) else str(obj[h])
             for h in header] for obj in objects]
    sys.stdout.write(_table(header, rows) + "\n")


def key_json(key: ApiKey) -> dict[str, Any]:
    """What anyone may see of a key: never the secret, nor its hash or prefix."""
    return {"id": str(key.id), "name": key.name, "scope": key.scope, "created": _when(key.created_at),
            "last_used": _when(key.last_used_at), "revoked": _when(key.revoked_at)}


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {"id": str(tenant.id), "name": tenant.name, "analyzed_roles": list(tenant.analyzed_roles),
            "analyze_unknown_roles": tenant.analyze_unknown_roles,
            "media_retention_days": tenant.media_retention_days,
            "data_retention_days": tenant.data_retention_days, "emotion_prior": tenant.emotion_prior}


def _retention(value: str) -> int | None:
    """Days as a positive integer; 'none' (or 'off') keeps data until deleted by hand."""
    if value.strip().lower() in ("none", "off", "never"):
        return None
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days or 'none', got '{value}'") from None
    if days < 1:
        raise argparse.ArgumentTypeError("retention is at least 1 day ('none' keeps data forever)")
    return days


def cmd_tenants_create(args: argparse.Namespace) -> int:
    from db.queries.tenants import TenantExists, create_tenant
    from db.session import transaction

    try:
        with transaction() as s:
            roles = _csv(args.analyzed_roles) if args.analyzed_roles else None
            tenant = create_tenant(s, args.name, roles, analyze_unknown_roles=not args.skip_unknown_roles)
            tenant.emotion_prior = args.emotion_prior
            tenant_id = tenant.id
    except TenantExists as exc:
        print(f"callpulse tenants create: {exc}", file=sys.stderr)
        return 1
    print(f"created tenant {args.name}", file=sys.stderr)
    print(tenant_id)
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    from db.queries.tenants import list_tenants
    from db.session import transaction

    with transaction() as s:
        objects = [tenant_json(t) for t in list_tenants(s)]
    _emit(objects, ("name", "id", "analyzed_roles", "analyze_unknown_roles", "media_retention_days",
                    "data_retention_days", "emotion_prior"), args.format)
    return 0


def cmd_tenants_update(args: argparse.Namespace) -> int:
    from db.queries.tenants import get_tenant_by_name
    from db.session import transaction

    with transaction() as s:
        tenant = get_tenant_by_name(s, args.name)
        if tenant is None:
            print(f"callpulse tenants update: no tenant named '{args.name}'", file=sys.stderr)
            return 1
        if args.analyzed_roles is not None:
            roles = _csv(args.analyzed_roles)
            if not roles:
                print("callpulse tenants update: --analyzed-roles needs at least one role", file=sys.stderr)
                return 2
            tenant.analyzed_roles = roles
        if args.analyze_unknown_roles is not None:
            tenant.analyze_unknown_roles = args.analyze_unknown_roles
        if args.media_retention_days is not _UNSET:
            tenant.media_retention_days = args.media_retention_days
        if args.data_retention_days is not _UNSET:
            tenant.data_retention_days = args.data_retention_days
        if args.emotion_prior is not None:
            tenant.emotion_prior = args.emotion_prior
        s.flush()
        obj = tenant_json(tenant)
    print(f"updated tenant {args.name} (applies to calls analyzed from now on; retention to every call "
          "at the next retention sweep)", file=sys.stderr)
    _emit([obj], ("name", "analyzed_roles", "analyze_unknown_roles", "media_retention_days",
                  "data_retention_days", "emotion_prior"), args.format)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from db.queries.tenants import create_api_key, get_tenant_by_name
    from db.session import transaction

    with transaction() as s:
        tenant = get_tenant_by_name(s, args.tenant)
        if tenant is None:
            print(f"callpulse keys create: no tenant named '{args.tenant}'", file=sys.stderr)
            return 1
        row, key = create_api_key(s, tenant.id, args.name, args.scope)
        key_id = row.id
    print(f"created {args.scope} API key {key_id} for tenant {args.tenant} (shown once; store it now)",
          file=sys.stderr)
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from db.queries.tenants import get_tenant_by_name, list_api_keys
    from db.session import transaction

    with transaction() as s:
        tenant = get_tenant_by_name(s, args.tenant)
        if tenant is None:
            print(f"callpulse keys list: no tenant named '{args.tenant}'", file=sys.stderr)
            return 1
        objects = [key_json(k) for k in list_api_keys(s, tenant.id)]
    _emit(objects, ("id", "name", "scope", "created", "last_used", "revoked"), args.format)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from db.queries.tenants import get_api_key, revoke_api_key
    from db.session import transaction

    try:
        key_id = uuid.UUID(args.key_id)
    except ValueError:
        print(f"callpulse keys revoke: '{args.key_id}' is not a key id (the id column of "
              "'callpulse keys list', not the secret)", file=sys.stderr)
        return 2
    with transaction() as s:
        key = get_api_key(s, key_id)
        if key is None:
            print(f"callpulse keys revoke: no API key {key_id}", file=sys.stderr)
            return 1
        newly = revoke_api_key(s, key)
        revoked = _when(key.revoked_at)
    if newly:
        print(f"revoked API key {key_id}; its API calls and dashboard sessions are refused from now on",
              file=sys.stderr)
    else:
        print(f"API key {key_id} was already revoked at {revoked}", file=sys.stderr)
    return 0


class _Unset:
    def __repr__(self) -> str:
        return "unchanged"


_UNSET: Any = _Unset()


PRIOR_CHOICES = ("balanced", "calls")
PRIOR_HELP = ("class prior applied at inference: balanced (default; the training prior, no label's recall "
              "traded away) or calls (neutral-heavy: fewer false alarms, less recall of the other labels; "
              "docs/MODELS.md)")


def add_admin_commands(sub: Any) -> None:
    """Register `tenants` and `keys` on the main parser's subcommands."""
    fmt = {"choices": ("table", "json"), "default": "table",
           "help": "table for people; json prints JSON Lines, one object per row"}
    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(dest="action", required=True)
    p = tenants.add_parser("create", help="create a tenant; prints its id alone on the last line")
    p.add_argument("name")
    p.add_argument("--analyzed-roles",
                   help="comma list of roles that get emotion inference (default: "
                   "CALLPULSE_DEFAULT_ANALYZED_ROLES, itself 'customer')")
    p.add_argument("--skip-unknown-roles", action="store_true",
                   help="do not analyze speakers whose role is unknown (mono calls)")
    p.add_argument("--emotion-prior", choices=PRIOR_CHOICES, default="balanced", help=PRIOR_HELP)
    p.set_defaults(func=cmd_tenants_create)

    p = tenants.add_parser("list", help="every tenant with its analyzed roles and retention")
    p.add_argument("--format", **fmt)
    p.set_defaults(func=cmd_tenants_list)

    p = tenants.add_parser("update", help="change a tenant's analyzed roles or retention; prints the result")
    p.add_argument("name")
    p.add_argument("--analyzed-roles", help="comma list of roles that get emotion inference, e.g. "
                   "'customer' (the EU AI Act prohibits emotion inference on a company's own agents)")
    unknown = p.add_mutually_exclusive_group()
    unknown.add_argument("--analyze-unknown-roles", dest="analyze_unknown_roles", action="store_const",
                         const=True, help="analyze speakers of unknown role on mono calls")
    unknown.add_argument("--skip-unknown-roles", dest="analyze_unknown_roles", action="store_const",
                         const=False, help="do not analyze speakers of unknown role")
    p.add_argument("--media-retention-days", type=_retention, default=_UNSET, metavar="DAYS|none",
                   help="delete a call's media (upload and decoded audio) this many days after upload; "
                   "its analysis stays; 'none' keeps media until the call is deleted")
    p.add_argument("--data-retention-days", type=_retention, default=_UNSET, metavar="DAYS|none",
                   help="delete a call entirely (segments, predictions, alerts, media, as DELETE "
                   "/v1/recordings/{id}) this many days after upload; 'none' keeps it")
    p.add_argument("--emotion-prior", choices=PRIOR_CHOICES, help=PRIOR_HELP)
    p.add_argument("--format", **fmt)
    p.set_defaults(func=cmd_tenants_update, analyze_unknown_roles=None)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("create", help="create an API key; prints the key alone on the last line")
    p.add_argument("--tenant", required=True, help="tenant name")
    p.add_argument("--name", default="", help="a label for the key")
    p.add_argument("--scope", choices=SCOPE_CHOICES, default="write",
                   help="read: look only (every write endpoint answers 403); write (default): also "
                   "upload, delete, correct, manage rules and webhooks; admin: also manage keys (/v1/keys)")
    p.set_defaults(func=cmd_keys_create)

    p = keys.add_parser("list", help="a tenant's keys: id, name, scope, created, last used, revoked "
                        "(never the secret)")
    p.add_argument("--tenant", required=True, help="tenant name")
    p.add_argument("--format", **fmt)
    p.set_defaults(func=cmd_keys_list)

    p = keys.add_parser("revoke", help="revoke a key: the API refuses it and its dashboard sessions end "
                        "at once")
    p.add_argument("key_id", metavar="KEY_ID", help="the key's id (from 'callpulse keys list')")
    p.set_defaults(func=cmd_keys_revoke)
