"""No Docker engine here: the Dockerfile is parsed and its rules checked."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_multi_stage_on_a_current_python_pinned_by_digest() -> None:
    ops = instructions()
    args = dict(a.split("=", 1) for op, a in ops if op == "ARG" and "=" in a)
    froms = [a.split()[0] for op, a in ops if op == "FROM"]
    assert len(froms) >= 2
    for written in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], written)
        assert re.fullmatch(r"python:3\.1[23]\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), image


def test_the_image_carries_every_module_the_manifests_run() -> None:
    """services.*, services.migrate and the localnet (with the venues it shares)."""
    copied = {a.split()[0].rstrip("/") for op, a in instructions() if op == "COPY" and not a.startswith("--from")}
    assert {"services", "venues", "localnet", "protos"} <= copied
    assert (ROOT / "services" / "migrate.py").exists()


def test_runtime_is_non_root_unbuffered_and_runs_a_service_module() -> None:
    ops = instructions()
    runtime = ops[max(i for i, (op, _) in enumerate(ops) if op == "FROM") :]
    users = [args for op, args in runtime if op == "USER"]
    assert users and not users[-1].startswith(("root", "0")), users
    env = " ".join(args for op, args in runtime if op == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    assert ("ENTRYPOINT", '["python", "-m"]') in runtime
    assert ("CMD", '["services.gateway"]') in runtime


def test_stubs_are_generated_in_the_build_and_secrets_stay_out() -> None:
    ops = instructions()
    runs = " ".join(args for op, args in ops if op == "RUN")
    assert "grpc_tools.protoc" in runs and "--pyi_out" in runs
    assert "-c requirements.lock" in runs, "installs exactly the pinned versions"
    copied = " ".join(args for op, args in ops if op == "COPY")
    assert ".env" not in copied and "secrets" not in copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests/"} <= set(ignored)
