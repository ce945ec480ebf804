# One image for the five services, the migration step and the localnet; the command picks the module:
#   docker run ghcr.io/dexengine/dexengine:0.1.0 services.orders
#   docker run ghcr.io/dexengine/dexengine:0.1.0 services.migrate
#   docker run ghcr.io/dexengine/dexengine:0.1.0 localnet
# Build from the repository root: docker build -t ghcr.io/dexengine/dexengine:0.1.0 .
#
# The base is pinned by digest (the tag says which Python it is). To move it:
#   docker buildx imagetools inspect python:3.13.5-slim-bookworm --format '{{json .Manifest.Digest}}'
ARG PYTHON_IMAGE=python:3.13.5-slim-bookworm@sha256:4c2cf9917bd1cbacc5e9b07320025bdb7cdf2df7b0ceaccb55e9dd7e30987419

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.txt requirements.lock ./
RUN /opt/venv/bin/pip install -r requirements.txt -c requirements.lock
COPY protos/ protos/
# The gRPC stubs are generated here, exactly as `make proto` does.
RUN mkdir -p dexengine/v1 \
 && /opt/venv/bin/python -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. --pyi_out=. protos/dexengine/v1/*.proto \
 && touch dexengine/__init__.py dexengine/v1/__init__.py

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 dexengine \
 && useradd --system --uid 10001 --gid dexengine --no-create-home --shell /usr/sbin/nologin dexengine
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/dexengine/ dexengine/
COPY protos/ protos/
COPY services/ services/
COPY venues/ venues/
COPY localnet/ localnet/
USER 10001:10001
EXPOSE 3000 50051 50052 50053 50054 9461 9462 9463 9464 8899 8900
ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
