# The readiness service image: a release binary on Debian slim, non-root, with a health check.
#
#   docker build -t readiness .            # or: podman build --format docker -t readiness .
#
# compiles the binary in the `build` stage. CI, which cannot pull the `rust` image, compiles the
# same way on the host and feeds the binary to the same runtime stage from an image holding it at
# /out/readiness (.ci/container.sh):
#
#   podman build --format docker --build-arg BINARY_FROM=localhost/readiness-ci-binary:TAG ...
ARG BINARY_FROM=build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN cargo build --release --locked --bin readiness \
    && install -D target/release/readiness /out/readiness

FROM ${BINARY_FROM} AS binary

FROM debian:bookworm-slim AS runtime
# ca-certificates (TLS to Argyle's API, to PostgreSQL and to an OTLP collector) is installed
# unless the base image already has it (CI's base, made with debootstrap, does).
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 readiness \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /var/lib/readiness \
        --shell /usr/sbin/nologin readiness \
    && install -d -o readiness -g readiness -m 750 /var/lib/readiness
COPY --from=binary /out/readiness /usr/local/bin/readiness
USER 10001:10001
WORKDIR /var/lib/readiness
ENV READINESS_HTTP_ADDR=0.0.0.0:8080 \
    READINESS_GRPC_ADDR=0.0.0.0:50051 \
    READINESS_DATABASE_URL=sqlite:///var/lib/readiness/readiness.db?mode=rwc \
    READINESS_LOG_FORMAT=json
EXPOSE 8080 50051
VOLUME ["/var/lib/readiness"]
# Probes /readyz at READINESS_HTTP_ADDR (an unspecified address such as 0.0.0.0 means this host),
# so it follows the address the service is given.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["readiness", "healthcheck"]
ENTRYPOINT ["readiness"]
CMD ["serve"]
