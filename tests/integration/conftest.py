"""Shared integration fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from tests.integration._postgres import postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[URL]:
    """One throwaway PostgreSQL server per test session (see _postgres.py)."""
    yield from postgres_server()
