#!/usr/bin/env bash
# Renders the kustomize base and every overlay offline and validates the output against the
# Kubernetes OpenAPI schemas (strict: unknown fields are errors) with kubernetes-validate, which
# is installed with pip if missing. No cluster needed. Exits non-zero on any failure.
#
#   bash k8s/validate.sh                 # against Kubernetes 1.30.0
#   K8S_VERSION=1.33.0 bash k8s/validate.sh
#   bash k8s/validate.sh --self-test     # broken copies of the manifests must fail
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="${K8S_VERSION:-1.30.0}"

# `--self-test`: copies of these manifests, each broken in one way, must fail, or this check
# proves nothing.
if [[ "${1:-}" == "--self-test" ]]; then
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    must_fail() { # what, file under k8s/, sed script that breaks it
        rm -rf "$scratch/k8s"
        cp -r "$here" "$scratch/k8s"
        sed -i "$3" "$scratch/k8s/$2"
        if cmp -s "$here/$2" "$scratch/k8s/$2"; then
            echo "validate: self-test could not break $2 ($1)" >&2
            exit 1
        fi
        if bash "$scratch/k8s/validate.sh" >/dev/null 2>&1; then
            echo "validate: self-test FAILED: $1 passed" >&2
            exit 1
        fi
    }
    must_fail "an unknown field" base/gateway.yaml 's/^kind: Deployment$/kind: Deployment\nreplicaz: 2/'
    must_fail "the gateway mounting signing.pem" base/gateway.yaml 's/key: verifying.pem/key: signing.pem/'
    must_fail "the gateway mounting the orchestrator's key" base/gateway.yaml \
        's/secretName: covibe-jwt/secretName: covibe-service-orchestrator/'
    echo "validate: self-test OK (broken manifests fail)"
    exit 0
fi

command -v kubectl >/dev/null || { echo "validate: kubectl not found" >&2; exit 1; }

validator="$(command -v kubernetes-validate || true)"
if [[ -z "$validator" ]]; then
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/covibe/kubernetes-validate"
    if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
        echo "validate: installing kubernetes-validate into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet kubernetes-validate
    fi
    validator="$venv/bin/kubernetes-validate"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

fail=0
check() { # name, condition message; marks failure without stopping the other checks
    echo "validate: FAIL $1: $2" >&2
    fail=1
}

# The Deployments (by name, space-separated) of a rendered file whose manifest contains a line
# matching the regex: who mounts a given key.
mounters() { # regex, file
    awk -v pat="$1" '
        function done() { if (deployment && hit) printf "%s%s", (n++ ? " " : ""), name }
        /^---$/ { done(); deployment = 0; hit = 0; name = ""; next }
        /^kind: Deployment$/ { deployment = 1 }
        /^  name: / && name == "" { name = $2 }
        $0 ~ pat { hit = 1 }
        END { done() }
    ' "$2"
}

targets=("$here/base")
for overlay in "$here"/overlays/*/; do
    targets+=("${overlay%/}")
done

for dir in "${targets[@]}"; do
    name="${dir#"$here"/}"
    file="$out/${name//\//-}.yaml"
    if ! kubectl kustomize "$dir" >"$file"; then
        check "$name" "kubectl kustomize failed"
        continue
    fi
    echo "validate: rendered $name ($(grep -c '^kind:' "$file") resources)"
    if ! "$validator" --kubernetes-version "$k8s_version" --strict --quiet "$file"; then
        check "$name" "schema validation against Kubernetes $k8s_version"
    fi
    # What a schema cannot see.
    if grep -q '^kind: Secret$' "$file"; then
        check "$name" "renders a Secret: real secrets must not live in the repository"
    fi
    deployments="$(grep -c '^kind: Deployment$' "$file" || true)"
    no_links="$(grep -c 'enableServiceLinks: false' "$file" || true)"
    if [[ "$deployments" != "$no_links" ]]; then
        check "$name" "every Deployment needs enableServiceLinks: false (unknown COVIBE_* env is fatal)"
    fi
    signing="$(grep -c 'key: signing.pem' "$file" || true)"
    if [[ "$signing" != 1 ]]; then
        check "$name" "exactly one Deployment (auth) may mount signing.pem, found $signing"
    fi
    signers="$(mounters 'key: signing.pem' "$file")"
    if [[ "$signers" != "covibe-auth" ]]; then
        check "$name" "only covibe-auth may mount signing.pem, found: ${signers:-none}"
    fi
    # The orchestrator's own key signs its service tokens: no other component may hold it.
    holders="$(mounters 'secretName: covibe-service-orchestrator|key: orchestrator.pem' "$file")"
    if [[ "$holders" != "covibe-orchestrator" ]]; then
        check "$name" "only covibe-orchestrator may mount its service key, found: ${holders:-none}"
    fi
done

# The example secrets are not part of any kustomization but must still be valid manifests.
if ! "$validator" --kubernetes-version "$k8s_version" --strict --quiet "$here/base/secrets.example.yaml"; then
    check "base/secrets.example.yaml" "schema validation against Kubernetes $k8s_version"
fi

if [[ "$fail" != 0 ]]; then
    echo "validate: FAILED" >&2
    exit 1
fi
echo "validate: OK (${#targets[@]} kustomizations, Kubernetes $k8s_version, strict)"
