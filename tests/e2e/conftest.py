from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.mesh import Mesh, mesh_env


@pytest.fixture(scope="session")
async def mesh(
    base_env: dict[str, str], database: str, amqp_cleanup: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    log_dir: Path = tmp_path_factory.mktemp("mesh-logs")
    running = Mesh(mesh_env(base_env), log_dir)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()
