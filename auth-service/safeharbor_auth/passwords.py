"""argon2id password hashing (OWASP parameters) and the password policy."""
from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import WeakPassword

MIN_LENGTH = 12
MAX_LENGTH = 128

# A short built-in list of passwords seen in breach corpora and their usual decorations. Compared after
# lower-casing, stripping digits and symbols, undoing leetspeak: "P@ssw0rd2024!" matches "password".
_COMMON_WORDS = (
    "password passw0rd p@ssword p@ssw0rd letmein welcome welcome1 qwerty qwertyuiop qwerty123 asdfgh "
    "asdfghjkl zxcvbnm iloveyou admin administrator root changeme changeit secret default monkey dragon "
    "football baseball basketball soccer superman batman master shadow sunshine princess trustno1 "
    "whatever abc123 abcdef abcdefg abcdefgh 123456 1234567 12345678 123456789 1234567890 123123 111111 "
    "000000 654321 987654321 summer winter spring autumn starwars freedom hello hello123 login access "
    "michael jennifer jordan hunter ranger harley charlie thomas hospital doctor nurse patient clinic "
    "medical health healthcare safeharbor harbor stream telemedicine covid19 pa55word passwordpassword "
    "correcthorsebatterystaple "
)
_COMMON: frozenset[str] = frozenset(_COMMON_WORDS.split())


class Passwords:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Verified for unknown users so their failure costs the same time as a wrong password.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, password: str) -> None:
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True


def policy_problems(password: str, *, username: str | None = None, name: str | None = None) -> list[str]:
    """Every rule the password breaks (empty when it is acceptable). Never echoes the password."""
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"at most {MAX_LENGTH} characters")
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < 2:
        problems.append("characters of at least two kinds (lower case, upper case, digits, symbols)")
    if len(set(password)) < 4:
        problems.append("more than three distinct characters")
    lowered = password.lower()
    if _looks_common(lowered):
        problems.append("not a common or breached password")
    if username and len(username) >= 3 and username.lower() in lowered:
        problems.append("must not contain the username")
    if name:
        for part in name.lower().split():
            if len(part) >= 4 and part in lowered:
                problems.append("must not contain the user's name")
                break
    return problems


_LEET = str.maketrans({"@": "a", "4": "a", "0": "o", "1": "i", "3": "e", "$": "s", "5": "s", "7": "t", "!": "i"})
_DECORATION = "0123456789!@#$%^&*()-_=+.,?~ "


def _looks_common(lowered: str) -> bool:
    """A listed password, possibly with digits/symbols around it, leetspeak, or repeated."""
    core = lowered.strip(_DECORATION)
    letters = "".join(c for c in lowered if c.isalpha())
    candidates = {lowered, core, letters, lowered.translate(_LEET), core.translate(_LEET)}
    for candidate in candidates:
        if candidate in _COMMON or _is_repeated_common(candidate):
            return True
        # One stray letter added to a listed word ("qwertyqwertyq").
        if len(candidate) > 4 and (_is_repeated_common(candidate[:-1]) or candidate[:-1] in _COMMON):
            return True
    return False


def _is_repeated_common(core: str) -> bool:
    for word in _COMMON:
        if len(word) >= 4 and core and len(core) % len(word) == 0 and core == word * (len(core) // len(word)):
            return True
    return False


def check_policy(password: str, *, username: str | None = None, name: str | None = None) -> None:
    problems = policy_problems(password, username=username, name=name)
    if problems:
        raise WeakPassword(
            "The password does not meet the policy: " + "; ".join(problems) + ".",
            extra={"problems": problems},
        )
