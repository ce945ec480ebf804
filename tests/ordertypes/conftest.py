from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.infra import TestInfra, isolated
from tests.support.mesh import Mesh, mesh_env


@pytest.fixture(scope="package")
async def mesh(
    base_env: dict[str, str], infra: TestInfra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    """A mesh of its own: these tests move prices, open pools and arm thousands of orders."""
    log_dir: Path = tmp_path_factory.mktemp("ordertypes-logs")
    async with isolated(infra.derive("ordertypes")) as own:
        running = Mesh(mesh_env({**base_env, **own.env(), "MAX_LIVE_ORDERS": "100000"}, log_dir), log_dir)
        try:
            await running.start()
            yield running
        finally:
            await running.stop()
