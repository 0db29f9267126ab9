# syntax=docker/dockerfile:1
#
# One image for every CoVibe component: `covibe <subcommand>` (standalone, auth, team,
# orchestrator, vm-connector, preview, gateway, vm-agent) plus the separate `vm-agent` binary.
#
#   docker build -t covibe:local .
#   docker run --rm -p 8080:8080 covibe:local              # standalone: everything, SQLite
#   docker run --rm covibe:local auth                       # one service (see docker-compose.yml)

# ---------------------------------------------------------------------------------------------
# The web client, built here; the Rust stage embeds this build (COVIBE_WEB_DIST), as its image
# has no Node.
FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web ./
RUN npm run build -- --outDir /web-dist

# ---------------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Only the workspace itself: never the host's target/ directory or other local state.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY crates crates
COPY services services
COPY gateway gateway
COPY vm-agent vm-agent
COPY covibe covibe

# Protos are compiled with protox (pure Rust), so no protoc is needed. The cache mounts keep the
# registry and target directory between builds; the binaries are copied out of the cache mount
# in the same step.
COPY --from=web /web-dist /web-dist
ENV COVIBE_WEB_DIST=/web-dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin covibe --bin vm-agent \
    && install -D -m 0755 -t /out target/release/covibe target/release/vm-agent

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to databases, Redis, OTLP collectors and GitHub.
# openssh-client: the vm-connector's "ssh_proxy" strategy drives the system `ssh`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates openssh-client \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric, non-root user (Kubernetes' runAsNonRoot checks the numeric id). Its home is the
# data directory, so ~/.ssh (known_hosts, control sockets) is writable wherever the data dir is.
# /keys exists and belongs to that user so a named volume mounted there (docker-compose) is
# initialised writable for it.
RUN groupadd --system --gid 10001 covibe \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/covibe \
       --shell /usr/sbin/nologin covibe \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/covibe /keys

COPY --from=builder /out/covibe /out/vm-agent /usr/local/bin/

# Only keys the configuration knows (unknown COVIBE_* variables are rejected at start).
ENV COVIBE_DATA_DIR=/var/lib/covibe \
    COVIBE_HTTP_ADDR=0.0.0.0:8080

USER 10001:10001
WORKDIR /var/lib/covibe

# 8080: gateway HTTP (REST, Socket.io, gRPC-web). 50051-50055: auth, team, orchestrator,
# vm-connector, preview gRPC.
EXPOSE 8080 50051 50052 50053 50054 50055

ENTRYPOINT ["covibe"]
CMD ["standalone"]
