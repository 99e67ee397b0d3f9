# syntax=docker/dockerfile:1
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
RUN cargo build --release --locked --bin retention-proxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/retention-proxy --create-home retention
COPY --from=build /src/target/release/retention-proxy /usr/local/bin/retention-proxy
COPY config/docker.toml /etc/retention-proxy/config.toml
USER retention
# The audit database (and its HMAC key) live on a volume so they outlive the container.
VOLUME ["/var/lib/retention-proxy"]
EXPOSE 8080
ENTRYPOINT ["retention-proxy"]
CMD ["serve", "--config", "/etc/retention-proxy/config.toml", "--log-format", "json"]
