# Multi-stage build of the readiness service. (It cannot be built on the development machines,
# which have no container engine; keep it simple and conventional.)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN cargo build --release --locked --bin readiness

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/readiness --create-home readiness
COPY --from=build /src/target/release/readiness /usr/local/bin/readiness
USER readiness
WORKDIR /var/lib/readiness
ENV READINESS_HTTP_ADDR=0.0.0.0:8080 \
    READINESS_GRPC_ADDR=0.0.0.0:50051 \
    READINESS_DATABASE_URL=sqlite:///var/lib/readiness/readiness.db?mode=rwc \
    READINESS_LOG_FORMAT=json
EXPOSE 8080 50051
VOLUME ["/var/lib/readiness"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["readiness", "healthcheck", "--http-addr", "127.0.0.1:8080"]
ENTRYPOINT ["readiness"]
CMD ["serve"]
