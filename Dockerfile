# Mimamori hub: multi-stage build, slim runtime, non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p hub --bin hub

FROM node:20-bookworm-slim AS dashboard
WORKDIR /dashboard
COPY dashboard/ .
RUN if [ -f package-lock.json ]; then npm ci --omit=dev; fi

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/mimamori mimamori
COPY --from=build /src/target/release/hub /usr/local/bin/hub
COPY --from=dashboard /dashboard /usr/share/mimamori/dashboard
USER mimamori
WORKDIR /var/lib/mimamori
# glibc gives each thread that allocates a heap of its own, up to eight per core, and
# each keeps what it once held: the hub's soak grew by 44 MiB that way (docs/performance.md).
ENV MALLOC_ARENA_MAX=2 \
    MIMAMORI_HTTP_ADDR=0.0.0.0:8080 \
    MIMAMORI_MQTT_ADDR=0.0.0.0:1883 \
    MIMAMORI_DASHBOARD_DIR=/usr/share/mimamori/dashboard \
    DATABASE_URL=sqlite:/var/lib/mimamori/mimamori.db
VOLUME ["/var/lib/mimamori"]
EXPOSE 8080 1883
ENTRYPOINT ["/usr/local/bin/hub"]
