"""Deterministic ids and the holdout draw: stable hashes, never Python's salted hash()."""

from __future__ import annotations

import hashlib

_SEP = "\x1f"  # unit separator: cannot occur in a user id (control characters are refused)


def _key(user_id: str, trigger: str, ts: float, policy_version: str) -> bytes:
    # Milliseconds, as example_id does: replays and redeliveries reproduce the same float.
    return _SEP.join((user_id, trigger, str(round(ts * 1000)), policy_version)).encode()


def decision_id(user_id: str, trigger: str, ts: float, policy_version: str) -> str:
    return hashlib.blake2b(
        b"decision" + _key(user_id, trigger, ts, policy_version), digest_size=16
    ).hexdigest()


def intervention_id(user_id: str, trigger: str, ts: float, policy_version: str) -> str:
    return hashlib.blake2b(
        b"intervention" + _key(user_id, trigger, ts, policy_version), digest_size=16
    ).hexdigest()


def holdout_draw(user_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, user_id): the same in every process."""
    digest = hashlib.blake2b(f"{salt}{_SEP}{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_holdout(user_id: str, share: float, salt: str) -> bool:
    return holdout_draw(user_id, salt) < share
