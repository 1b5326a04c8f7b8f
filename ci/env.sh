# Sourced by .ci/run and the xtask wrappers: one build cache per machine.
#
# RocksDB's C++ build takes ~14 minutes on 2 cores. We keep one target dir
# outside the clone, and after the first build we keep librocksdb.a and
# libsnappy.a (built by librocksdb-sys itself, from the exact version in
# Cargo.lock) in a cache so that later builds in any profile link them instead
# of compiling RocksDB again.

REGATTA_CACHE="${REGATTA_CACHE:-$HOME/.cache/regatta-rs}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REGATTA_CACHE/target}"
mkdir -p "$CARGO_TARGET_DIR"

regatta_rocksdb_version() {
    awk '/^name = "librocksdb-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock
}

# Exports ROCKSDB_LIB_DIR & co. when a cached static library exists; otherwise
# builds RocksDB once from source (as part of the server crate) and caches it.
regatta_use_prebuilt_rocksdb() {
    local version lib_dir built
    version="$(regatta_rocksdb_version)"
    lib_dir="$REGATTA_CACHE/rocksdb-$version"
    if [[ ! -f "$lib_dir/librocksdb.a" || ! -f "$lib_dir/libsnappy.a" ]]; then
        echo "ci/env.sh: building RocksDB $version once from source (about 15 minutes on 2 cores)"
        # Only librocksdb-sys has to succeed here; the rest is built (and its
        # errors reported) by the commands that follow.
        (unset ROCKSDB_LIB_DIR ROCKSDB_STATIC SNAPPY_LIB_DIR SNAPPY_STATIC; cargo build --workspace --lib) || true
        built="$(ls -t "$CARGO_TARGET_DIR"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1)"
        if [[ -z "$built" ]]; then
            echo "ci/env.sh: RocksDB did not build; see the errors above" >&2
            return 1
        fi
        mkdir -p "$lib_dir.tmp"
        cp "$built" "$(dirname "$built")/libsnappy.a" "$lib_dir.tmp/"
        rm -rf "$lib_dir"
        mv "$lib_dir.tmp" "$lib_dir"
    fi
    export ROCKSDB_LIB_DIR="$lib_dir" ROCKSDB_STATIC=1 SNAPPY_LIB_DIR="$lib_dir" SNAPPY_STATIC=1
}
