"""What a push template may read. An allow-list: anything not named here is refused (fail closed).

Stream's push context (message.new) holds `channel`, `sender`, `receiver`, `message`, `members`,
`otherMembers`, `unread_count`, `unread_channels`, `total_unread_count`, `event_type` and, for reaction
pushes, `reaction`. Only identifiers and counters are free of PHI: names, texts, custom fields, channel
names and member lists can all identify a patient or reveal a condition on a lock screen.
"""
from __future__ import annotations

ELEMENT = "[]"  # path marker for "one element of the array iterated by #each"
UNKNOWN = "?"  # a segment the linter cannot know (dynamic lookup, helper output)

# Fields a template may print; compared case-insensitively (fail closed on `Message.Text` as well).
ALLOWED_PATHS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("message", "id"),
        ("sender", "id"),
        ("receiver", "id"),
        ("channel", "id"),
        ("channel", "cid"),
        ("channel", "type"),
        ("channel", "member_count"),
        ("unread_count",),
        ("unread_channels",),
        ("total_unread_count",),
        ("event_type",),
    }
)

# Rendered as numbers when checking that the template yields valid JSON (`"badge": {{unread_count}}`).
NUMERIC_PATHS: frozenset[tuple[str, ...]] = frozenset(
    {("unread_count",), ("unread_channels",), ("total_unread_count",), ("channel", "member_count")}
)

# Collections and objects that are people: iterating them (`{{#each}}` or a section) is refused outright.
PEOPLE_SEGMENTS: frozenset[str] = frozenset(
    {
        "members",
        "othermembers",
        "sender",
        "receiver",
        "user",
        "users",
        "created_by",
        "mentioned_users",
        "thread_participants",
        "watchers",
        "read",
        "latest_reactions",
        "own_reactions",
        "reaction",
    }
)

# Safe data variables inside blocks; `@root` is resolved to the root context.
SAFE_DATA_VARIABLES: frozenset[str] = frozenset({"index", "key", "first", "last"})

# Helpers that put PHI in the payload whatever their arguments.
PHI_HELPERS: dict[str, str] = {
    "json": "the json helper serialises whole objects (message text, names, custom fields)",
    "implodemembers": "implodeMembers prints the names of channel members",
}

# Helpers whose output is derived only from their (separately checked) arguments.
SAFE_HELPERS: frozenset[str] = frozenset({"truncate", "lookup", "equal", "eq", "ne", "if", "unless", "each", "with"})

CONTEXT_HELPERS: frozenset[str] = frozenset({"with", "each"})
CONDITION_HELPERS: frozenset[str] = frozenset({"if", "unless"})


def display(parts: tuple[str, ...]) -> str:
    if not parts:
        return "this"
    out = ""
    for part in parts:
        if part == ELEMENT:
            out += "[]"
        else:
            out += ("." if out else "") + part
    return out


def is_allowed(parts: tuple[str, ...]) -> bool:
    return tuple(p.lower() for p in parts) in ALLOWED_PATHS


def is_numeric(parts: tuple[str, ...]) -> bool:
    return tuple(p.lower() for p in parts) in NUMERIC_PATHS


def is_people(parts: tuple[str, ...]) -> bool:
    """True for the whole context, anything unknown, or a path that names people."""
    if not parts:
        return True
    named = [p.lower() for p in parts if p != ELEMENT]
    if not named or UNKNOWN in named:
        return True
    return named[-1] in PEOPLE_SEGMENTS


def refusal_reason(parts: tuple[str, ...]) -> str:
    """Why reading `parts` is refused (only called for paths that are not allowed)."""
    lowered = [p.lower() for p in parts]
    name = display(parts)
    if not lowered:
        return "the whole template context includes message text and people's names"
    if UNKNOWN in lowered:
        return f"{name}: the linter cannot tell which field this reads, so it is refused"
    head = lowered[0]
    if head == "message":
        return f"{name}: only message.id is free of PHI (message text and fields may hold PHI)"
    if head in ("sender", "receiver"):
        return f"{name}: only {head}.id is free of PHI (names and custom fields identify people)"
    if head == "channel":
        if len(lowered) > 1 and lowered[1] == "name":
            return "channel.name may name a patient or a condition"
        return f"{name}: channel custom fields may hold PHI (allowed: channel.id, cid, type, member_count)"
    if head in ("members", "othermembers"):
        return f"{name}: the member list holds people's names"
    if head == "reaction":
        return f"{name}: reaction data may carry user names and text"
    if head.startswith("@"):
        return f"{name}: unknown data variable"
    return f"{name} is not on the allow-list of PHI-free fields"
