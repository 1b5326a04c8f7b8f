#!/usr/bin/env bash
# Checks that `cargo xtask jepsen` catches deliberate bugs that only show
# under faults: applies each patch, builds the release server, runs the
# nemesis that should expose it on the processes backend, reverts the patch.
# A mutation whose runs come out clean is printed as NOT CAUGHT (exit 1).
#
#   conformance/mutations/jepsen/run.sh            # every mutation below
#   RUNS=3 TIME=30 conformance/mutations/jepsen/run.sh ack-before-sync
set -uo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=../../../ci/env.sh
source ci/env.sh
regatta_use_prebuilt_rocksdb

# name, patch, nemesis, further jepsen flags
mutations=(
    "local-linearizable-reads conformance/mutations/local-linearizable-reads.patch isolate-leader"
    "ack-before-sync conformance/mutations/jepsen/ack-before-sync.patch restart-all"
    "ack-during-sync conformance/mutations/jepsen/ack-during-sync.patch restart-all"
    "follower-skips-entries conformance/mutations/jepsen/follower-skips-entries.patch kill-random --follower 3"
    "answer-credit conformance/mutations/jepsen/answer-credit.patch pause-leader"
)
runs="${RUNS:-2}"
time="${TIME:-30}"

if [[ -n "$(git status --porcelain server)" ]]; then
    echo "server/ has uncommitted changes; commit or stash them first" >&2
    exit 2
fi
logs="$CARGO_TARGET_DIR/jepsen/mutations"
mkdir -p "$logs"
missed=0
for entry in "${mutations[@]}"; do
    read -r name patch nemesis flags <<<"$entry"
    if [[ $# -gt 0 && ! " $* " =~ " $name " ]]; then
        continue
    fi
    git apply "$patch" || exit 2
    trap 'git apply -R "$patch"' EXIT
    if ! built="$(cargo run --quiet --package xtask -- server-binary --release)"; then
        echo "$name: the mutated server does not build" >&2
        exit 2
    fi
    # The next build overwrites the binary; run a copy.
    binary="$logs/regatta-$name"
    cp "$built" "$binary"
    git apply -R "$patch"
    trap - EXIT
    rm -rf "${logs:?}/$name"
    if REGATTA_CONFORMANCE_BACKEND=processes REGATTA_BINARY="$binary" \
        cargo run --quiet --package xtask -- jepsen --runs "$runs" --nemesis "$nemesis" \
        --time "$time" --out "$logs/$name" ${flags:-} >"$logs/$name.log" 2>&1; then
        echo "$name: NOT CAUGHT by $runs $nemesis runs of $time s"
        missed=1
    else
        caught="$(grep -c 'ANOMALY' "$logs/$name.log")"
        if [[ "$caught" -gt 0 ]]; then
            echo "$name: caught by $nemesis: $caught anomalies in $runs runs of $time s (see $logs/$name)"
        else
            # A run that broke is not the checker catching the bug.
            echo "$name: NOT CAUGHT by the checker; the runs failed (see $logs/$name.log)"
            missed=1
        fi
        grep -m3 'ANOMALY\|run failed' "$logs/$name.log" | sed 's/^/    /'
    fi
done
exit $missed
