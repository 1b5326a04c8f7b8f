#!/usr/bin/env bash
# Checks that the conformance suite catches deliberate bugs: applies each
# patch in this directory to the server, builds the binary, runs the suite
# on the processes backend until its first failure, and reverts the patch.
# A mutation the suite does not catch is printed as NOT CAUGHT (exit 1).
#
#   conformance/mutations/run.sh                  # every patch
#   conformance/mutations/run.sh flip-more ...    # some of them
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../ci/env.sh
source ci/env.sh
regatta_use_prebuilt_rocksdb

if [[ -n "$(git status --porcelain server)" ]]; then
    echo "server/ has uncommitted changes; commit or stash them first" >&2
    exit 2
fi
names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
    for patch in conformance/mutations/*.patch; do names+=("$(basename "$patch" .patch)"); done
fi
logs="$CARGO_TARGET_DIR/conformance/mutations"
mkdir -p "$logs"
missed=0
for name in "${names[@]}"; do
    patch="conformance/mutations/$name.patch"
    git apply "$patch" || exit 2
    trap 'git apply -R "$patch"' EXIT
    if ! binary="$(cargo run --quiet --package xtask -- server-binary --release)"; then
        echo "$name: the mutated server does not build" >&2
        exit 2
    fi
    started=$SECONDS
    if REGATTA_CONFORMANCE_BACKEND=processes REGATTA_BINARY="$binary" \
        cargo test --quiet -p conformance --test conformance -- --fail-fast >"$logs/$name.log" 2>&1; then
        echo "$name: NOT CAUGHT ($((SECONDS - started)) s)"
        missed=1
    else
        caught_by="$(grep -B30 -m1 'Step failed' "$logs/$name.log" | grep -E '^  Scenario' | tail -1 | sed 's/^ *Scenario[^:]*: //')"
        echo "$name: caught by \"$caught_by\" ($((SECONDS - started)) s)"
    fi
    git apply -R "$patch"
    trap - EXIT
done
exit $missed
