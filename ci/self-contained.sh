#!/usr/bin/env bash
# Fails when a tracked file refers to a path outside the repository: a clone
# must build, test and document itself with nothing beside it. What counts:
# a folder beside the clone (`../shared`, `shared/spec/...`), the tool
# folders of the machine the project was written on, and absolute home or
# work paths of a machine.
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
# This script names the patterns itself. Binary files are searched too (the
# descriptor set carries the protos' comments) and show as "Binary file ...".
if git grep -n -E "${args[@]}" -- . ':!ci/self-contained.sh'; then
    echo "ci/self-contained.sh: the lines above refer to paths outside the repository" >&2
    exit 1
fi
echo "ci/self-contained.sh: no tracked file refers to a path outside the repository"
