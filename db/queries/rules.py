"""Rules and their versions. Tenant-scoped where a client id comes in; never commits."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Rule, RuleVersion, utcnow


def create_rule(session: Session, tenant_id: uuid.UUID, name: str, description: str, enabled: bool,
                definition: dict[str, Any], severity: str) -> tuple[Rule, RuleVersion]:
    rule = Rule(tenant_id=tenant_id, name=name, description=description, enabled=enabled, current_version=1)
    session.add(rule)
    session.flush()
    version = RuleVersion(rule_id=rule.id, version=1, definition=definition, severity=severity)
    session.add(version)
    session.flush()
    return rule, version


def get_rule(session: Session, tenant_id: uuid.UUID, rule_id: uuid.UUID, for_update: bool = False
             ) -> Rule | None:
    """Another tenant's id, or a deleted rule, finds nothing."""
    stmt = select(Rule).where(Rule.id == rule_id, Rule.tenant_id == tenant_id, Rule.deleted_at.is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def get_version(session: Session, rule_id: uuid.UUID, version: int) -> RuleVersion | None:
    stmt = select(RuleVersion).where(RuleVersion.rule_id == rule_id, RuleVersion.version == version)
    return session.scalars(stmt).one_or_none()


def list_versions(session: Session, rule_id: uuid.UUID) -> list[RuleVersion]:
    stmt = select(RuleVersion).where(RuleVersion.rule_id == rule_id).order_by(RuleVersion.version)
    return list(session.scalars(stmt))


def list_rules(session: Session, tenant_id: uuid.UUID, enabled: bool | None = None
               ) -> list[tuple[Rule, RuleVersion]]:
    """Live rules with their current version, oldest first."""
    stmt = (
        select(Rule, RuleVersion)
        .join(RuleVersion, (RuleVersion.rule_id == Rule.id) & (RuleVersion.version == Rule.current_version))
        .where(Rule.tenant_id == tenant_id, Rule.deleted_at.is_(None))
        .order_by(Rule.created_at, Rule.id)
    )
    if enabled is not None:
        stmt = stmt.where(Rule.enabled.is_(enabled))
    return [(rule, version) for rule, version in session.execute(stmt)]


def add_version(session: Session, rule: Rule, definition: dict[str, Any], severity: str) -> RuleVersion:
    """Editing never rewrites a version: the caller holds the rule row locked (get_rule for_update)."""
    version = RuleVersion(rule_id=rule.id, version=rule.current_version + 1, definition=definition,
                          severity=severity)
    session.add(version)
    rule.current_version = version.version
    rule.updated_at = utcnow()
    session.flush()
    return version


def delete_rule(rule: Rule) -> None:
    rule.deleted_at = utcnow()
    rule.enabled = False
