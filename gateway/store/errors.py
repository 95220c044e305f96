"""The store's exception tree; messages name ids Tacet generated, never content or secrets.

StoreError
 +-- NotFound     absent, or owned by another tenant (the two are indistinguishable)
 +-- Conflict     a unique name taken, or an immutable version given different content
 +-- UnsupportedDatabase  a TACET_DATABASE_URL the store cannot use
"""

from __future__ import annotations

__all__ = ["Conflict", "NotFound", "StoreError", "UnsupportedDatabase"]


class StoreError(Exception):
    """Base of every control-plane storage error."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class UnsupportedDatabase(StoreError):
    pass
