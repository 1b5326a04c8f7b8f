//! The `regatta` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    fixed_mmap_threshold();
    match regatta::cli::parse(std::env::args_os().collect()) {
        Ok(cli) => regatta::cli::run(cli),
        Err(err) => {
            let _ = err.print();
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
        }
    }
}

/// glibc raises its mmap threshold each time an mmapped block is freed (up
/// to 32 MiB), after which blocks of a few MiB (write batches, snapshot
/// chunks, stream messages) come from the per-thread arenas and stay
/// resident once freed: a node that installed a 2 GiB snapshot kept 453 MiB
/// (BENCHMARKS.md, snapshot-memory). A fixed 1 MiB threshold hands such
/// blocks back to the system when they are freed. `MALLOC_MMAP_THRESHOLD_`
/// in the environment still decides when set.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}
