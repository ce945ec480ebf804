from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.infra import TestInfra, isolated
from tests.support.mesh import Mesh, mesh_env
from tests.support.secured import INTERNAL_TOKEN


@pytest.fixture(scope="package")
async def mesh(
    base_env: dict[str, str], infra: TestInfra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    log_dir: Path = tmp_path_factory.mktemp("mesh-logs")
    async with isolated(infra.derive("e2e")) as own:
        running = Mesh(mesh_env({**base_env, **own.env()}, log_dir), log_dir)
        try:
            await running.start()
            yield running
        finally:
            await running.stop()


@pytest.fixture(scope="package")
async def auth_mesh(
    base_env: dict[str, str], infra: TestInfra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    """The mesh with AUTH=apikey: keys on every public door, the services calling each other with INTERNAL_TOKEN."""
    log_dir: Path = tmp_path_factory.mktemp("auth-mesh-logs")
    async with isolated(infra.derive("e2eauth")) as own:
        env = mesh_env({**base_env, **own.env(), "AUTH": "apikey", "INTERNAL_TOKEN": INTERNAL_TOKEN}, log_dir)
        running = Mesh(env, log_dir)
        try:
            await running.start()
            yield running
        finally:
            await running.stop()
