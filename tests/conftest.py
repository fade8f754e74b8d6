"""Shared test configuration: anyio tests run on both asyncio and trio."""

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
