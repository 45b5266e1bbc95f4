//! `strand-engine`: see `cli.rs` for the commands.

/// jemalloc, the allocator Redis ships with. The writer thread allocates the versions,
/// images and records that the sync and checkpoint threads later free; glibc's allocator
/// spent 28 % of the writer's samples at 50 pipelined clients, most of it in its slow
/// paths, and the engine spent about a quarter less CPU per pipelined SET with jemalloc
/// (decision 0003, "The allocator, and reads that never open the table"). Its background
/// purging threads stay off (they cost 7–9 % more CPU per SET here); tuning goes through
/// `_RJEM_MALLOC_CONF` (the build's symbols are prefixed), not `MALLOC_CONF`
/// (docs/operations.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(strand_engine::cli::main());
}
