//! The `hub` binary; everything it does lives in the library ([`hub::cli`]).

/// Ingest allocates and frees small buffers per message on many threads; mimalloc does
/// that with far less work than glibc's malloc (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hub::cli::main()
}
