# syntax=docker/dockerfile:1
#
# The infra image: both executables, `infra` (CLI, `infra server`, `infra
# connector`) and `infra-credential` (kubectl's credential plugin), on a
# distroless base (glibc, libgcc, CA certificates; no shell, no package
# manager), running as the non-root user 65532. deploy/server.yaml and
# deploy/connector.yaml run it.
#
#   docker build -t infra:0.1.0 .
#   docker run --rm infra:0.1.0 version
#
# Needs BuildKit (Docker's default builder since 23.0) for the cache mounts,
# which keep cargo's registry and target directory between builds.
# Optional build arguments: VERSION (the image's version label, default the
# crate's), REVISION (the git commit), SOURCE (where the source lives).

ARG RUST_VERSION=1.95.0

# Debian 12 (bookworm) on both sides: the binary needs the builder's glibc or
# newer. TLS is rustls (ring): no OpenSSL to build or to ship; SQLite is
# compiled in.
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
    && install -D -m 0755 -t /out target/release/infra target/release/infra-credential

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=
ARG SOURCE=
LABEL org.opencontainers.image.title="infra" \
      org.opencontainers.image.description="Access to Kubernetes clusters through OpenID Connect: CLI, API server and connector" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Side by side: infra-credential hands anything but a cached token to the
# `infra` in its own directory.
COPY --from=builder /out/infra /out/infra-credential /usr/local/bin/
USER 65532:65532
# 8443: the server's or the connector's HTTPS; 9464 / 9465: their /healthz
# and /metrics (plain HTTP) when given --metrics-listen 0.0.0.0:PORT.
EXPOSE 8443 9464 9465
ENTRYPOINT ["/usr/local/bin/infra"]
