# One image for the five services; the command picks the service:
#   docker run ghcr.io/dexengine/dexengine:0.1.0 services.orders
# Build from the repository root: docker build -t ghcr.io/dexengine/dexengine:0.1.0 .

FROM python:3.11.7-slim-bookworm AS build
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

FROM python:3.11.7-slim-bookworm AS runtime
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
USER 10001:10001
EXPOSE 3000 50051 50052 50053 50054 9461 9462 9463 9464
ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
