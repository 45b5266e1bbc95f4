//! `strand-engine`: see `cli.rs` for the commands.

fn main() {
    std::process::exit(strand_engine::cli::main());
}
