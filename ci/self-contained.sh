#!/usr/bin/env bash
# Fails when a tracked file refers to a path outside the repository: a clone
# must build, test and document itself with nothing beside it. What counts:
# a folder beside the clone (`../shared`, `shared/spec/...`), the tool
# folders of the machine the project was written on, and absolute home or
# work paths of a machine. Fails too when a file outside docs/spec/,
# docs/design/ and CHANGELOG.md cites the upstream behaviour contract (below).
set -euo pipefail
cd "$(dirname "$0")/.."

patterns=(
    '\.\./shared'
    '(^|[^[:alnum:]_./-])shared/(spec|notes|fixtures|hooks)/'
    '(^|[^[:alnum:]_./-])shared/DESIGN\.md'
    '\.\./\.library|/\.library/|\.mirror/'
    '(^|[^[:alnum:]_.-])/(work|root|home)/'
)
args=()
for pattern in "${patterns[@]}"; do
    args+=(-e "$pattern")
done
failed=0
# This script names the patterns itself. Binary files are searched too (the
# descriptor set carries the protos' comments) and show as "Binary file ...".
if git grep -n -E "${args[@]}" -- . ':!ci/self-contained.sh'; then
    echo "ci/self-contained.sh: the lines above refer to paths outside the repository" >&2
    failed=1
else
    echo "ci/self-contained.sh: no tracked file refers to a path outside the repository"
fi

# The features under features/ and the pages under docs/ document what the
# server does. The upstream contract copied into docs/spec/ is cited only
# there, in the dated design notes and in the changelog; code and docs point
# at the feature or docs page (docs/contract-notes.md) that states the rule.
upstream='behaviour''.md'
if git grep -l -F "$upstream" -- . ':!docs/spec' ':!docs/design' ':!CHANGELOG.md'; then
    echo "ci/self-contained.sh: the files above cite $upstream; cite the feature" \
        "or docs page that states the rule instead (see docs/contract-notes.md)" >&2
    failed=1
else
    echo "ci/self-contained.sh: no tracked file outside docs/spec/, docs/design/ and" \
        "CHANGELOG.md cites $upstream"
fi
exit "$failed"
