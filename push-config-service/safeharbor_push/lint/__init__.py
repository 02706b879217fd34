"""The PHI linter for Stream push templates (Handlebars): parser, policy, literal scanners, JSON check."""
from .linter import PROVIDER_KINDS, RULES, Finding, LintResult, lint_template

__all__ = ["PROVIDER_KINDS", "RULES", "Finding", "LintResult", "lint_template"]
