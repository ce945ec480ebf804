"""Rendered manifests and the programs the deployment tests drive, shared by them."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OBS = DEPLOY / "observability"
OVERLAYS = ("dev", "prod")
Objects = list[dict[str, Any]]


def program(name: str, how: str) -> str:
    """The path of a program the tests need; fail (never skip) when it is missing, saying how to install it."""
    path = shutil.which(name)
    assert path, f"{name} is needed by tests/deploy: {how}"
    return path


def render(path: Path) -> Objects:
    kubectl = program("kubectl", "kubectl kustomize renders the overlays offline (kubectl ships kustomize)")
    out = subprocess.run([kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


_rendered: dict[str, Objects] = {}


def rendered(name: str) -> Objects:
    """One overlay's objects, rendered once per session."""
    if name not in _rendered:
        _rendered[name] = render(DEPLOY / "overlays" / name)
    return _rendered[name]


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, Objects]:
    return request.param, rendered(request.param)


def by_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
