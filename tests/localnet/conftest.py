"""One localnet for the module's tests (fast landing, no drift); some tests start their own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed

from tests.support.localnet import Localnet, running_localnet


@pytest.fixture(scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Localnet]:
    async with running_localnet(log_dir=tmp_path_factory.mktemp("localnet")) as running:
        yield running


@pytest.fixture
async def client(net: Localnet) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(net.rpc_url, commitment=Confirmed, timeout=30) as rpc:
        yield rpc
