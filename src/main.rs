//! The `transbordo` command: see `transbordo --help`.

/// mimalloc: a loaded flow is hundreds of thousands of small allocations; glibc's
/// malloc spends a third of `check`'s time coalescing them and adds a header to each.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    transbordo::cli::main().await
}
