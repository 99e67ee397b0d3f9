# syntax=docker/dockerfile:1
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The dependencies in a layer of their own, built from the manifest and the lock file with
# placeholder sources: a change under src/ reuses it and compiles only the proxy itself.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --profile dist --locked --bin retention-proxy \
    && rm -rf src
COPY src ./src
# The copied sources may be older than the placeholder build: touch them so cargo rebuilds
# the proxy instead of keeping the placeholder.
RUN touch src/main.rs src/lib.rs \
    && cargo build --profile dist --locked --bin retention-proxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 retention \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/retention-proxy --create-home \
       --shell /usr/sbin/nologin retention \
    && chmod 0700 /var/lib/retention-proxy
COPY --from=build /src/target/dist/retention-proxy /usr/local/bin/retention-proxy
COPY config/docker.toml /etc/retention-proxy/config.toml
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# Everything the proxy writes (the audit database, its write-ahead log, the HMAC and
# checkpoint keys) is under this volume, so the root filesystem can be read-only
# (`docker run --read-only`). SQLite's temporary files (large sorts of an event query; each is
# deleted as soon as it is opened) go there too instead of /tmp, so no tmpfs is needed.
ENV SQLITE_TMPDIR=/var/lib/retention-proxy
VOLUME ["/var/lib/retention-proxy"]
# The listener is on every interface, so reverse-mode AWS clients must be listed in
# /etc/retention-proxy/clients.toml; the admin listener too, so it needs its token in
# /run/secrets/admin_token. Mount both mode 0600 (or 0400), owned by uid 10001; see the README,
# "Deploying". Without them the container exits 64 at start-up.
EXPOSE 8080 9090
# The image has no curl: the binary asks its own admin listener's /healthz (with the token).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["retention-proxy", "health", "--config", "/etc/retention-proxy/config.toml"]
ENTRYPOINT ["retention-proxy"]
CMD ["serve", "--config", "/etc/retention-proxy/config.toml", "--log-format", "json"]
