# syntax=docker/dockerfile:1
# The `apiary` node image: `docker build -t apiary:latest .`
# Configured only by environment (APIARY_STORAGE, AWS_*, APIARY_* tuning; see README).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p apiary-node --bin apiary \
    && install -m 0755 target/release/apiary /usr/local/bin/apiary

FROM debian:bookworm-slim
# CA certificates for HTTPS object stores; tini forwards SIGTERM so the node leaves cleanly.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/apiary --create-home apiary
COPY --from=build /usr/local/bin/apiary /usr/local/bin/apiary
USER 10001:10001
ENV APIARY_STATE_DIR=/var/lib/apiary/state \
    APIARY_STATUS_FILE=/var/lib/apiary/status.json \
    APIARY_STORAGE=/var/lib/apiary/data \
    RUST_LOG=info
WORKDIR /var/lib/apiary
VOLUME ["/var/lib/apiary"]
# Healthy while the node keeps refreshing its view of the swarm (every poll, 5 s default).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
    CMD ["sh", "-c", "test -n \"$(find /var/lib/apiary/status.json -newermt '-60 seconds' 2>/dev/null)\""]
ENTRYPOINT ["/usr/bin/tini", "--", "apiary"]
CMD ["node"]
