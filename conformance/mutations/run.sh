#!/usr/bin/env bash
# Checks that the conformance suite catches deliberate bugs: applies each
# patch in this directory to the server, builds the (debug) binary, runs the
# suite on the processes backend until its first failure, and reverts the
# patch. A mutation the suite does not catch is printed as NOT CAUGHT
# (exit 1).
#
# Each patch starts with a header that `git apply` ignores:
#   Mutation: what it breaks          Layer: storage|api|cluster|replication|maintenance
#   Expect: <feature>: "<scenario>"   Tags: <tag expression>
# The expected scenario runs first, then (when it passes) the scenarios of
# the tag expression, and with --full the whole suite: a mutation counts as
# caught by the first scenario that fails, whichever it is.
#
#   conformance/mutations/run.sh                  # every patch
#   conformance/mutations/run.sh flip-more ...    # some of them
#   conformance/mutations/run.sh --full ...       # the whole suite as last resort
#
# Prints a Markdown table (also in <target>/conformance/mutations/table.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../ci/env.sh
source ci/env.sh
regatta_use_prebuilt_rocksdb

full=0
names=()
for arg in "$@"; do
    case "$arg" in
        --full) full=1 ;;
        *) names+=("$arg") ;;
    esac
done
if [[ -n "$(git status --porcelain server)" ]]; then
    echo "server/ has uncommitted changes; commit or stash them first" >&2
    exit 2
fi
if [[ ${#names[@]} -eq 0 ]]; then
    for patch in conformance/mutations/*.patch; do names+=("$(basename "$patch" .patch)"); done
fi
logs="$CARGO_TARGET_DIR/conformance/mutations"
mkdir -p "$logs"
table="$logs/table.md"
echo "| mutation | layer | what it breaks | caught by | seconds |" | tee "$table"
echo "|---|---|---|---|---|" | tee -a "$table"
missed=0

header() { sed -n "s/^$1: //p" "$2" | head -n 1; }

# Runs the suite with cucumber arguments "$@"; succeeds when a scenario failed
# (the mutation is caught), naming it in $caught_by.
caught_by=""
suite_catches() {
    local log="$1"
    shift
    if REGATTA_CONFORMANCE_BACKEND=processes REGATTA_BINARY="$binary" \
        cargo test --quiet -p conformance --test conformance -- --fail-fast "$@" >"$log" 2>&1; then
        return 1
    fi
    caught_by="$(grep -A2 -m1 'scenario(s) failed:' "$log" | sed -n '2p' | sed 's/^ *//')"
    [[ -n "$caught_by" ]] || caught_by="(the run failed without a failed scenario: see $log)"
    return 0
}

for name in "${names[@]}"; do
    patch="conformance/mutations/$name.patch"
    git apply "$patch" || exit 2
    trap 'git apply -R "$patch"' EXIT
    if ! binary="$(cargo run --quiet --package xtask -- server-binary)"; then
        echo "$name: the mutated server does not build" >&2
        exit 2
    fi
    layer="$(header Layer "$patch")"
    what="$(header Mutation "$patch")"
    expect="$(header Expect "$patch" | sed 's/^[^"]*"//; s/"$//')"
    tags="$(header Tags "$patch")"
    started=$SECONDS
    result="NOT CAUGHT"
    # The scenario name as a regex that matches it literally.
    pattern="^$(printf '%s' "$expect" | sed 's/[][\.*^$()+?{}|]/\\&/g')\$"
    if [[ -n "$expect" ]] && suite_catches "$logs/$name.expected.log" --name "$pattern"; then
        result="$caught_by"
    elif [[ -n "$tags" ]] && suite_catches "$logs/$name.tags.log" --tags "$tags"; then
        result="$caught_by"
    elif [[ $full -eq 1 ]] && suite_catches "$logs/$name.log"; then
        result="$caught_by"
    fi
    [[ "$result" == "NOT CAUGHT" ]] && missed=1
    echo "| \`$name\` | $layer | $what | $result | $((SECONDS - started)) |" | tee -a "$table"
    git apply -R "$patch"
    trap - EXIT
done
exit $missed
