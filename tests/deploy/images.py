"""What each image used by the manifests ships, as far as the manifests' mounts are concerned.

Read off the images' own Dockerfiles (docker-library rabbitmq 3.13 and its
management variant, postgres, redis, prom/prometheus, grafana, the
OpenTelemetry Collector contrib and Jaeger images) and this repository's
Dockerfile. A directory mount (not a subPath) at or above one of these paths
hides the file: that is how the dev RabbitMQ lost its ``10-defaults.conf``.
A new image in the manifests must be added here (the test says so).
"""

from __future__ import annotations

# RabbitMQ 3.13 (management): /etc/rabbitmq as the image ships it.
RABBITMQ_ETC = {
    "conf.d/10-defaults.conf": (
        "## DEFAULT SETTINGS ARE NOT MEANT TO BE TAKEN STRAIGHT INTO PRODUCTION\n"
        "## see https://www.rabbitmq.com/configure.html for further information\n"
        "## on configuring RabbitMQ\n\n"
        "## allow access to the guest user from anywhere on the network\n"
        "## https://www.rabbitmq.com/access-control.html#loopback-users\n"
        "## https://www.rabbitmq.com/production-checklist.html#users\n"
        "loopback_users.guest = false\n\n"
        "## Send all logs to stdout/TTY. Necessary to see logs when running via\n"
        "## a container\n"
        "log.console = true\n"
    ),
    # rabbitmq-plugins enable --offline rabbitmq_prometheus (base), rabbitmq_management (management).
    "enabled_plugins": "[rabbitmq_management,rabbitmq_prometheus].\n",
}

IMAGE_FILES: dict[str, tuple[str, ...]] = {
    "ghcr.io/dexengine/dexengine": (
        "/app/services/__init__.py",
        "/app/dexengine/v1/__init__.py",
        "/app/venues/__init__.py",
        "/app/localnet/__init__.py",
        "/app/protos/dexengine/v1/orders.proto",
        "/opt/venv/bin/python",
        "/etc/passwd",
    ),
    "rabbitmq": tuple(f"/etc/rabbitmq/{name}" for name in RABBITMQ_ETC),
    "postgres": ("/usr/share/postgresql/postgresql.conf.sample", "/usr/local/bin/docker-entrypoint.sh"),
    "redis": ("/usr/local/bin/redis-server", "/usr/local/bin/docker-entrypoint.sh"),
    "otel/opentelemetry-collector-contrib": ("/etc/otelcol-contrib/config.yaml",),
    "jaegertracing/all-in-one": ("/go/bin/all-in-one-linux",),
    "prom/prometheus": (
        "/etc/prometheus/prometheus.yml",
        "/usr/share/prometheus/console_libraries/prom.lib",
        "/usr/share/prometheus/consoles/index.html.example",
    ),
    "grafana/grafana": ("/etc/grafana/grafana.ini", "/etc/grafana/ldap.toml", "/usr/share/grafana/conf/defaults.ini"),
}


def repository(image: str) -> str:
    """``rabbitmq:3.13.7-management@sha256:...`` -> ``rabbitmq``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def hidden_by(mount_path: str, image: str) -> list[str]:
    """The image's files that a directory mounted at ``mount_path`` hides."""
    prefix = mount_path.rstrip("/") + "/"
    return [path for path in IMAGE_FILES[repository(image)] if path.startswith(prefix)]
