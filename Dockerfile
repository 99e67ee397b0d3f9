# syntax=docker/dockerfile:1
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
RUN cargo build --profile dist --locked --bin retention-proxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/retention-proxy --create-home retention
COPY --from=build /src/target/dist/retention-proxy /usr/local/bin/retention-proxy
COPY config/docker.toml /etc/retention-proxy/config.toml
USER retention
# The audit database (and its HMAC key) live on a volume so they outlive the container.
VOLUME ["/var/lib/retention-proxy"]
# The listener is on every interface, so reverse-mode AWS clients must be listed in
# /etc/retention-proxy/clients.toml (mount it, mode 0600, owned by uid 10001); see the README,
# "Who may call it". Without it the container exits 64 at start-up.
EXPOSE 8080
ENTRYPOINT ["retention-proxy"]
CMD ["serve", "--config", "/etc/retention-proxy/config.toml", "--log-format", "json"]
