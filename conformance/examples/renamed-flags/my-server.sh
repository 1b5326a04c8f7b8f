#!/usr/bin/env bash
# A stand-in for "another implementation" whose flags are not Regatta's: it
# takes its own names and runs this repository's server with Regatta's. The
# template beside it (server.toml) tells the conformance suite how to start
# it, so the suite runs unchanged against a server with other flag names:
#
#   REAL_SERVER=/path/to/regatta REGATTA_CONFORMANCE_CONFIG=conformance/examples/renamed-flags/server.toml \
#     REGATTA_CONFORMANCE_BACKEND=processes cargo test -p conformance --test conformance -- --tags @txn
set -euo pipefail
role="$1"
shift
case "$role" in
    serve) args=(leader) ;;
    mirror) args=(follower) ;;
    *) echo "my-server: serve or mirror, not $role" >&2; exit 2 ;;
esac
for arg in "$@"; do
    value="${arg#*=}"
    case "$arg" in
        --id=*) args+=("--raft.node-id=$value") ;;
        --peers=*) args+=("--raft.initial-members=$value") ;;
        --raft=*) args+=("--raft.listen-address=$value") ;;
        --advertise=*) args+=("--raft.address=$value") ;;
        --grpc=*) args+=("--api.address=$value") ;;
        --http=*) args+=("--rest.address=$value") ;;
        --replication=*) args+=("--replication.address=$value") ;;
        --admin=*) args+=("--maintenance.address=$value") ;;
        --data=*) args+=("--raft.node-host-dir=$value/raft" "--raft.state-machine-dir=$value/state-machine") ;;
        --tables=*) args+=("--tables.names=$value") ;;
        --upstream=*) args+=("--replication.leader-address=$value" "--replication.reconcile-interval=1s") ;;
        --snapshot-every=*) args+=("--raft.snapshot-entries=$value") ;;
        --keep-after-snapshot=*) args+=("--raft.compaction-overhead=$value") ;;
        --rejoin) args+=("--raft.join") ;;
        *) echo "my-server: unknown argument $arg" >&2; exit 2 ;;
    esac
done
exec "${REAL_SERVER:?set REAL_SERVER to the regatta binary}" "${args[@]}"
