# CoVibe developer commands. `just` is a convenience: every recipe is plain cargo/bash underneath.
# Install it with `cargo install just` (or `pip install rust-just`).

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Every service in one process over SQLite and in-process state: http://127.0.0.1:8080
standalone:
    cargo run --release --bin covibe -- standalone

# The whole test suite.
test:
    cargo nextest run --workspace

# Formatting and clippy, warnings as errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs.
ci:
    bash .ci/run

# Render the Kubernetes manifests (base and overlays) and validate them offline.
k8s-validate:
    bash k8s/validate.sh

# auth :50051, team :50052, orchestrator :50053, vm-connector :50054, preview :50055 (gRPC) and
# the gateway on http://127.0.0.1:8080, wired like the Kubernetes deployment. Separate processes
# share state only through PostgreSQL and Redis, so both must be running; set
# COVIBE_DATABASE_URL / COVIBE_REDIS_URL to yours (the database must exist). The token signing key
# is created first (`covibe admin rotate-signing-key --if-missing`) under COVIBE_DATA_DIR/keys
# (default .covibe-multi): no service makes up a key of its own. Ctrl-C stops them all.
#
# Every service as its own process (needs PostgreSQL and Redis): http://127.0.0.1:8080
multi:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --bin covibe --bin vm-agent
    export COVIBE_DATABASE_URL="${COVIBE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/covibe}"
    export COVIBE_REDIS_URL="${COVIBE_REDIS_URL:-redis://127.0.0.1:6379}"
    export COVIBE_DATA_DIR="${COVIBE_DATA_DIR:-.covibe-multi}"
    export COVIBE_LINK_URL="${COVIBE_LINK_URL:-http://127.0.0.1:50053}"
    export COVIBE_ENDPOINTS__AUTH=http://127.0.0.1:50051
    export COVIBE_ENDPOINTS__TEAM=http://127.0.0.1:50052
    export COVIBE_ENDPOINTS__ORCHESTRATOR=http://127.0.0.1:50053
    export COVIBE_ENDPOINTS__VM_CONNECTOR=http://127.0.0.1:50054
    export COVIBE_ENDPOINTS__PREVIEW=http://127.0.0.1:50055
    export COVIBE_AUTH__SIGNING_KEY_FILE="$COVIBE_DATA_DIR/keys/jwt-signing.pem"
    export COVIBE_AUTH__VERIFYING_KEY_FILE="$COVIBE_DATA_DIR/keys/jwt-signing.pub.pem"
    mkdir -p "$COVIBE_DATA_DIR"
    bin=target/release/covibe
    trap 'trap - EXIT INT TERM; kill $(jobs -p) 2>/dev/null || true; wait' EXIT INT TERM
    "$bin" admin rotate-signing-key --if-missing
    COVIBE_GRPC_ADDR=127.0.0.1:50051 "$bin" auth &
    COVIBE_GRPC_ADDR=127.0.0.1:50052 "$bin" team &
    COVIBE_GRPC_ADDR=127.0.0.1:50053 "$bin" orchestrator &
    COVIBE_GRPC_ADDR=127.0.0.1:50054 "$bin" vm-connector &
    COVIBE_GRPC_ADDR=127.0.0.1:50055 "$bin" preview &
    COVIBE_HTTP_ADDR=127.0.0.1:8080 "$bin" gateway &
    echo "multi: gateway on http://127.0.0.1:8080; Ctrl-C stops every service" >&2
    # Stop everything as soon as any one service exits.
    status=0
    wait -n || status=$?
    echo "multi: a service exited (status $status); stopping the others" >&2
    exit 1

# CoVibe against the seed's own stack (Node + Socket.io + Redis), side by side on this machine:
# fan-out, idle sockets, history replay and spawn against the seed, CoVibe multi-process (a
# throwaway PostgreSQL database and a private redis-server) and CoVibe standalone, then the
# CoVibe/seed ratios. Needs PostgreSQL, redis-server and Node 20 (the seed's packages are
# installed with npm ci if missing); under 10 minutes on 2 cores. Options pass through, e.g.
# `just bench --quick` or `just bench --stacks seed,standalone --secs 10`. See BENCHMARKS.md.
bench *ARGS:
    mkdir -p target/covibe-bench
    cargo build --release -p covibe -p covibe-bench
    target/release/covibe-bench all --out target/covibe-bench/results.jsonl {{ARGS}}
