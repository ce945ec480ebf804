"""Fuzz the gateway from its own OpenAPI document with schemathesis (pinned in requirements-dev.txt).

Runs against the AUTH=apikey mesh with a key (quota high enough for the run),
with the five checks: no server error, documented status codes, documented
content types, responses that match their schemas, and invalid input rejected.
Seeded, so a failure reproduces.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import grpc

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from tests.support.mesh import Mesh
from tests.support.secured import ADMIN

ST = Path(sys.executable).parent / "st"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


async def test_schemathesis_finds_no_failure(auth_mesh: Mesh, tmp_path: Path) -> None:
    async with grpc.aio.insecure_channel(auth_mesh.grpc_target("orders")) as channel:
        created = await orders_pb2_grpc.OrdersStub(channel).CreateApiKey(
            orders_pb2.CreateApiKeyRequest(name=f"fuzz-{uuid.uuid4().hex[:8]}", quota_per_min=100_000),
            metadata=ADMIN,
            timeout=5,
        )
    command = [
        str(ST),
        "run",
        f"{auth_mesh.http}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--header",
        f"Authorization: Bearer {created.secret}",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "40",
        "--seed",
        "20260101",
        "--generation-database",
        "none",
        # One worker: with two, hypothesis describes filters by parsing source (ast.parse) in both
        # threads at once, which CPython 3.11 does not survive (SystemError: AST recursion depth mismatch).
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 600)
    text = output.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)  # the whole report, kept with the test's files
    print(text[-3_000:])  # noqa: T201 - the summary, shown with -s
    assert proc.returncode == 0, text[-20_000:]
    assert "No issues found" in text or " passed" in text, text[-5_000:]
