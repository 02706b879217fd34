"""The PHI linter against a corpus of safe and unsafe templates: every rule hit and missed, tricky forms."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safeharbor_push.defaults import DEFAULT_TEMPLATES
from safeharbor_push.lint import RULES, lint_template


def apn(alert: str) -> str:
    """An APNs payload whose alert is `alert` (inside a JSON string)."""
    return '{"aps": {"alert": "' + alert + '"}}'


# (case id, provider, kind, template, expected {(rule, offending text)})
CORPUS: list[tuple[str, str, str, str, set[tuple[str, str]]]] = [
    # --- safe ---
    ("safe-generic-apn", "apn", "notification", DEFAULT_TEMPLATES[("apn", "notification")], set()),
    ("safe-generic-fcm", "firebase", "notification", DEFAULT_TEMPLATES[("firebase", "notification")], set()),
    ("safe-generic-fcm-data", "firebase", "data", DEFAULT_TEMPLATES[("firebase", "data")], set()),
    ("safe-generic-fcm-apn", "firebase", "apn", DEFAULT_TEMPLATES[("firebase", "apn")], set()),
    ("safe-ids", "apn", "notification", apn("{{ message.id }} {{sender.id}} {{receiver.id}} {{channel.cid}}"), set()),
    ("safe-with-message-id", "apn", "notification", apn("{{#with message}}{{id}}{{/with}}"), set()),
    ("safe-whitespace-braces", "apn", "notification", apn("{{   channel.type   }}{{~ channel.id ~}}"), set()),
    ("safe-triple-id", "apn", "notification", apn("{{{ message.id }}}{{& channel.cid}}"), set()),
    ("safe-truncate-args", "apn", "notification", apn("{{truncate message.id 10}}"), set()),
    ("safe-comment-hides-phi", "apn", "notification", apn("{{! message.text }}{{!-- {{sender.name}} --}}New"), set()),
    ("safe-escaped-mustache", "apn", "notification", apn("\\{{message.text}}"), set()),
    (
        "safe-if-else-counters",
        "apn",
        "notification",
        '{"aps": {"alert": "New", "badge": {{#if unread_count}}{{unread_count}}{{else}}0{{/if}}}}',
        set(),
    ),
    (
        "safe-lookup-literal",
        "apn",
        "notification",
        apn('{{lookup channel "cid"}}{{#with (lookup this "message")}}{{id}}{{/with}}'),
        set(),
    ),
    ("safe-parent-path", "apn", "notification", apn("{{#with channel}}{{../message.id}}{{cid}}{{/with}}"), set()),
    ("safe-root-data", "apn", "notification", apn("{{@root.channel.type}}"), set()),
    ("safe-block-param-id", "apn", "notification", apn("{{#with sender as |s|}}{{s.id}}{{/with}}"), set()),
    ("safe-text-no-phi", "apn", "notification", apn("You have 2 new messages (v2, ttl 3600)"), set()),
    # --- phi-variable ---
    ("var-message-text", "apn", "notification", apn("{{message.text}}"), {("phi-variable", "message.text")}),
    ("var-sender-name", "apn", "notification", apn("{{ sender.name }}"), {("phi-variable", "sender.name")}),
    ("var-receiver-custom", "apn", "notification", apn("{{receiver.dob}}"), {("phi-variable", "receiver.dob")}),
    ("var-channel-name", "apn", "notification", apn("{{channel.name}}"), {("phi-variable", "channel.name")}),
    (
        "var-channel-custom",
        "apn",
        "notification",
        apn("{{channel.diagnosis}}"),
        {("phi-variable", "channel.diagnosis")},
    ),
    ("var-triple", "apn", "notification", apn("{{{ message.text }}}"), {("phi-variable", "message.text")}),
    ("var-ampersand", "apn", "notification", apn("{{& message.text}}"), {("phi-variable", "message.text")}),
    ("var-with-message", "apn", "notification", apn("{{#with message}}{{text}}{{/with}}"), {("phi-variable", "text")}),
    (
        "var-with-block-param",
        "apn",
        "notification",
        apn("{{#with message as |m|}}{{m.text}}{{/with}}"),
        {("phi-variable", "m.text")},
    ),
    ("var-section", "apn", "notification", apn("{{#message}}{{text}}{{/message}}"), {("phi-variable", "text")}),
    (
        "var-helper-argument",
        "apn",
        "notification",
        apn("{{truncate message.text 100}}"),
        {("phi-variable", "message.text")},
    ),
    (
        "var-hash-argument",
        "apn",
        "notification",
        apn("{{truncate message.id length=sender.name}}"),
        {("phi-variable", "sender.name")},
    ),
    (
        "var-lookup",
        "apn",
        "notification",
        apn("{{lookup message 'text'}}"),
        {("phi-variable", "lookup message 'text'")},
    ),
    (
        "var-lookup-subexpr",
        "apn",
        "notification",
        apn('{{truncate (lookup sender "name") 5}}'),
        {("phi-variable", 'lookup sender "name"')},
    ),
    ("var-root", "apn", "notification", apn("{{@root.message.text}}"), {("phi-variable", "@root.message.text")}),
    (
        "var-parent",
        "apn",
        "notification",
        apn("{{#with channel}}{{../message.html}}{{/with}}"),
        {("phi-variable", "../message.html")},
    ),
    ("var-slash-path", "apn", "notification", apn("{{message/text}}"), {("phi-variable", "message/text")}),
    ("var-literal-segment", "apn", "notification", apn("{{message.[text]}}"), {("phi-variable", "message.[text]")}),
    ("var-this-prefix", "apn", "notification", apn("{{this.sender.name}}"), {("phi-variable", "this.sender.name")}),
    ("var-case", "apn", "notification", apn("{{Message.Text}}"), {("phi-variable", "Message.Text")}),
    ("var-whole-context", "apn", "notification", apn("{{this}}"), {("phi-variable", "this")}),
    ("var-members", "apn", "notification", apn("{{members}}"), {("phi-variable", "members")}),
    ("var-reaction", "apn", "notification", apn("{{reaction.type}}"), {("phi-variable", "reaction.type")}),
    ("var-condition", "apn", "notification", apn("{{#if message.text}}x{{/if}}"), {("phi-variable", "message.text")}),
    ("var-unknown-top", "apn", "notification", apn("{{patient_name}}"), {("phi-variable", "patient_name")}),
    ("var-unknown-data", "apn", "notification", apn("{{@secret}}"), {("phi-variable", "@secret")}),
    (
        "var-else-chain",
        "apn",
        "notification",
        apn("{{#if channel.id}}a{{else if sender.email}}b{{else}}c{{/if}}"),
        {("phi-variable", "sender.email")},
    ),
    # --- phi-helper ---
    (
        "helper-implode",
        "apn",
        "notification",
        apn("{{implodeMembers otherMembers}}"),
        {("phi-helper", "implodeMembers"), ("phi-variable", "otherMembers")},
    ),
    ("helper-implode-bare", "apn", "notification", apn("{{implodeMembers}}"), {("phi-helper", "implodeMembers")}),
    (
        "helper-json",
        "firebase",
        "data",
        '{"payload": "{{json message}}"}',
        {("phi-helper", "json"), ("phi-variable", "message")},
    ),
    (
        "helper-json-subexpr",
        "apn",
        "notification",
        apn("{{truncate (json channel.id) 20}}"),
        {("phi-helper", "json")},
    ),
    # --- phi-each ---
    (
        "each-members",
        "apn",
        "notification",
        apn("{{#each members}}{{name}}{{/each}}"),
        {("phi-each", "members"), ("phi-variable", "name")},
    ),
    (
        "each-other-members-ids",
        "apn",
        "notification",
        apn("{{#each otherMembers as |m|}}{{m.id}}{{/each}}"),
        {("phi-each", "otherMembers"), ("phi-variable", "m.id")},
    ),
    ("each-root", "apn", "notification", apn("{{#each this}}x{{/each}}"), {("phi-each", "this")}),
    (
        "each-mentioned",
        "apn",
        "notification",
        apn("{{#each message.mentioned_users}}x{{/each}}"),
        {("phi-each", "message.mentioned_users")},
    ),
    ("each-section-members", "apn", "notification", apn("{{^members}}none{{/members}}"), {("phi-each", "members")}),
    (
        "each-non-people-reads",
        "apn",
        "notification",
        apn("{{#each channel.tags}}{{this}}{{/each}}"),
        {("phi-variable", "this")},
    ),
    # --- unknown helpers and partials ---
    ("unknown-helper", "apn", "notification", apn("{{shout message.id}}"), {("unknown-helper", "shout")}),
    ("partial", "apn", "notification", apn("{{> patientCard}}"), {("partial", "{{> patientCard}}")}),
    # --- literals ---
    ("lit-phone", "apn", "notification", apn("Call (555) 123-4567"), {("phi-literal-phone", "(555) 123-4567")}),
    (
        "lit-phone-intl",
        "apn",
        "notification",
        apn("Call +44 20 7946 0958"),
        {("phi-literal-phone", "+44 20 7946 0958")},
    ),
    (
        "lit-email",
        "apn",
        "notification",
        apn("Mail jane.doe@clinic.org"),
        {("phi-literal-email", "jane.doe@clinic.org")},
    ),
    ("lit-ssn", "apn", "notification", apn("SSN 123-45-6789"), {("phi-literal-ssn", "123-45-6789")}),
    ("lit-mrn", "apn", "notification", apn("MRN: A1234567"), {("phi-literal-mrn", "MRN: A1234567")}),
    ("lit-date-iso", "apn", "notification", apn("Visit 2024-03-05"), {("phi-literal-date", "2024-03-05")}),
    ("lit-date-us", "apn", "notification", apn("Visit 3/5/2024"), {("phi-literal-date", "3/5/2024")}),
    ("lit-date-words", "apn", "notification", apn("Seen March 5th, 2024"), {("phi-literal-date", "March 5th, 2024")}),
    ("lit-in-comment", "apn", "notification", apn("{{! call 555-123-4567 }}"), {("phi-literal-phone", "555-123-4567")}),
    (
        "lit-in-string-arg",
        "apn",
        "notification",
        apn('{{truncate "ssn 123-45-6789" 3}}'),
        {("phi-literal-ssn", "123-45-6789")},
    ),
    # --- syntax, JSON, empty ---
    ("syntax-unclosed-block", "apn", "notification", apn("{{#if channel.id}}x"), {("syntax", None)}),  # type: ignore[arg-type]
    ("syntax-mismatch", "apn", "notification", apn("{{#if channel.id}}x{{/each}}"), {("syntax", None)}),  # type: ignore[arg-type]
    ("syntax-unclosed-mustache", "apn", "notification", apn("{{channel.id"), {("syntax", None)}),  # type: ignore[arg-type]
    ("json-missing-aps", "apn", "notification", '{"alert": "New"}', {("invalid-json", None)}),  # type: ignore[arg-type]
    ("json-bad-badge", "apn", "notification", '{"aps": {"badge": {{message.id}}}}', {("invalid-json", None)}),  # type: ignore[arg-type]
    ("json-data-not-string", "firebase", "data", '{"count": {{unread_count}}}', {("invalid-json", None)}),  # type: ignore[arg-type]
    ("json-trailing-comma", "firebase", "notification", '{"title": "New",}', {("invalid-json", None)}),  # type: ignore[arg-type]
    ("empty", "firebase", "notification", "   ", {("empty-template", "")}),
]


def _summary(template: str, provider: str, kind: str) -> set[tuple[str, str | None]]:
    result = lint_template(template, provider=provider, kind=kind)
    return {(f.rule, None if f.rule in ("syntax", "invalid-json") else f.text) for f in result.findings}


@pytest.mark.parametrize(
    ("provider", "kind", "template", "expected"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_corpus(provider: str, kind: str, template: str, expected: set[tuple[str, str | None]]) -> None:
    assert _summary(template, provider, kind) == expected


def test_corpus_is_large_and_covers_every_rule_hit_and_missed() -> None:
    assert len(CORPUS) >= 40
    hit = {rule for *_, expected in CORPUS for rule, _text in expected}
    assert hit >= set(RULES) - {"payload-size"}, set(RULES) - hit
    # Every template that hits nothing is a miss for every rule.
    assert sum(1 for *_, expected in CORPUS if not expected) >= 15


def test_payload_size_rule() -> None:
    template = '{"aps": {"alert": "' + "x" * 5000 + '"}}'
    rules = {f.rule for f in lint_template(template, provider="apn", kind="notification").findings}
    assert rules == {"payload-size"}


def test_positions_are_one_based_line_and_column() -> None:
    template = '{\n  "aps": {\n    "alert": "{{ sender.name }} at 555-123-4567"\n  }\n}'
    findings = lint_template(template, provider="apn", kind="notification").findings
    assert [(f.rule, f.line, f.column) for f in findings] == [
        ("phi-variable", 3, 18),
        ("phi-literal-phone", 3, 36),
    ]


def test_invalid_json_position_points_into_the_template() -> None:
    template = '{"aps": {"alert": "ok"},\n "badge": {{message.id}}}'
    (finding,) = lint_template(template, provider="apn", kind="notification").findings
    assert (finding.rule, finding.line, finding.column) == ("invalid-json", 2, 11)


def test_every_finding_is_listed_not_just_the_first() -> None:
    template = apn("{{message.text}} {{sender.name}} {{json channel}} 123-45-6789 {{#each members}}{{/each}}")
    rules = [f.rule for f in lint_template(template, provider="apn", kind="notification").findings]
    assert rules.count("phi-variable") == 3
    assert {"phi-helper", "phi-literal-ssn", "phi-each"} <= set(rules)


def test_findings_are_json_serialisable_and_carry_path() -> None:
    (finding,) = lint_template(apn("{{#with message}}{{text}}{{/with}}"), provider="apn", kind="notification").findings
    data = finding.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["path"] == "message.text"


def test_helper_with_arguments_and_hash_is_parsed() -> None:
    ok = lint_template(apn('{{truncate message.id 20 suffix="..."}}'), provider="apn", kind="notification")
    assert ok.ok


def test_kind_must_exist_for_provider() -> None:
    with pytest.raises(ValueError):
        lint_template("{}", provider="apn", kind="data")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(
        alphabet=st.sampled_from(list("{}#/^!~&>@.[]()\"' =|-abcmt0123456789\n")) | st.characters(),
        max_size=80,
    )
)
def test_linter_never_crashes_on_arbitrary_input(text: str) -> None:
    result = lint_template(text, provider="firebase", kind="notification")
    for finding in result.findings:
        assert finding.rule in RULES
        assert finding.line >= 1 and finding.column >= 1


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["message.text", "sender.name", "channel.name", "members", "reaction.type"]),
    st.text(" \t\n", max_size=3),
)
def test_phi_paths_are_found_whatever_the_whitespace(path: str, space: str) -> None:
    for template in (
        apn("{{" + space + path + space + "}}"),
        apn("{{{" + space + path + space + "}}}"),
        apn("{{~" + space + path + space + "~}}"),
        apn("{{truncate " + path + " 10}}"),
    ):
        rules = {f.rule for f in lint_template(template, provider="apn", kind="notification").findings}
        assert "phi-variable" in rules, template


def test_pathological_nesting_is_refused_quickly() -> None:
    import time

    started = time.monotonic()
    deep_blocks = apn("{{#each channel.tags}}" * 200 + "x" + "{{/each}}" * 200)
    assert {f.rule for f in lint_template(deep_blocks, provider="apn", kind="notification").findings} == {"syntax"}
    deep_subexpr = apn("{{truncate " + "(truncate " * 200 + "channel.id" + " 1)" * 200 + " 1}}")
    assert {f.rule for f in lint_template(deep_subexpr, provider="apn", kind="notification").findings} == {"syntax"}
    long_chain = apn("{{#if channel.id}}a" + "{{else if channel.id}}b" * 300 + "{{/if}}")
    assert {f.rule for f in lint_template(long_chain, provider="apn", kind="notification").findings} == {"syntax"}
    exponential = apn("{{#each channel.tags}}" * 30 + "{{/each}}" * 30)
    rules = {f.rule for f in lint_template(exponential, provider="apn", kind="notification").findings}
    assert rules == {"payload-size"}
    assert time.monotonic() - started < 5
