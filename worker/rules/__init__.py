"""Escalation rules: the declarative language (``language``) and its pure evaluation over an
emotion trajectory (``evaluate``). No database here: live evaluation (worker.stages.rules) and the
backtest endpoint call the same ``evaluate`` on trajectories they load themselves."""

from worker.rules.evaluate import Firing, Point, evaluate
from worker.rules.language import RuleDefinition, RuleError, parse_definition, parse_text

__all__ = ["Firing", "Point", "RuleDefinition", "RuleError", "evaluate", "parse_definition", "parse_text"]
