//! `strand-engine`: see `cli.rs` for the commands.

/// jemalloc, the allocator Redis ships with. The writer thread allocates the versions,
/// images and records that the sync and checkpoint threads later free; glibc's allocator
/// paid for that hand-over in its slow paths (a quarter of the writer's samples), and the
/// engine spent 20–30 % less CPU per pipelined SET with jemalloc (decision 0003, "The
/// allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(strand_engine::cli::main());
}
