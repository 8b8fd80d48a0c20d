# authgate container image.
#   docker build -t authgate:local .
#   docker run --rm -v "$PWD/my-config.yaml:/etc/authgate/config.yaml:ro" -p 8080:8080 authgate:local
# The image holds no config: mount yours at /etc/authgate/config.yaml (see
# deploy/compose-config.yaml). Inside a container the listeners must bind 0.0.0.0, and
# state.path should be absolute and under /var/lib/authgate (the only folder the
# non-root user may write).
# Plain Dockerfile syntax (no BuildKit-only features), so the legacy builder that
# docker-compose 1.x uses builds it too.

FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole context (less .dockerignore): Cargo.toml names targets such as benches that
# cargo insists on finding even when it builds only the binary, so a manifest-only
# dependency layer would break whenever a target is added.
COPY . .
RUN cargo build --profile dist --locked --bin authgate \
 && install -m 0755 target/dist/authgate /usr/local/bin/authgate

FROM debian:bookworm-slim
# ca-certificates follows the Debian release (security updates), so it is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric id, so that volume ownership and run-as-user policies can rely on it.
RUN groupadd --system --gid 10001 authgate \
 && useradd --system --uid 10001 --gid authgate --home-dir /var/lib/authgate \
      --shell /usr/sbin/nologin authgate \
 && install -d -o authgate -g authgate -m 0750 /var/lib/authgate \
 && install -d -m 0755 /etc/authgate
COPY --from=builder /usr/local/bin/authgate /usr/local/bin/authgate
# Numeric, so that runtimes enforcing "run as non-root" can check it without /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/authgate
# 8080: proxy listener. 9090: admin listener (/healthz, /readyz, /metrics, admin API):
# publish it only on a trusted interface.
EXPOSE 8080 9090
# The image has no curl: `authgate probe` GETs the status listener (`listen.status`, plain
# HTTP, no admin key or client certificate) and exits 0 on a 2xx. It expects
# `listen.status: "127.0.0.1:9091"` in the mounted config (deploy/compose-config.yaml has
# it); a config without it makes the container report unhealthy (override with
# `--health-cmd` or `--no-healthcheck`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["authgate", "probe", "--timeout", "3s", "http://127.0.0.1:9091/readyz"]
ENTRYPOINT ["authgate"]
CMD ["serve", "-c", "/etc/authgate/config.yaml"]
