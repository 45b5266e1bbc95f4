//! Sets the engine's version triple. A normal build is the crate's version with on-disk format
//! 1 and replication protocol 1. The `next-version` feature builds the same source as the
//! next minor release — one minor version up, format 2, protocol 2 — so that the hot-standby
//! upgrade (docs/upgrades.md) can be tested with two real builds side by side.
fn main() {
    let major: u64 = std::env::var("CARGO_PKG_VERSION_MAJOR").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let minor: u64 = std::env::var("CARGO_PKG_VERSION_MINOR").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let patch: u64 = std::env::var("CARGO_PKG_VERSION_PATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let next = std::env::var_os("CARGO_FEATURE_NEXT_VERSION").is_some();
    let (version, step) =
        if next { (format!("{major}.{}.0", minor + 1), 1) } else { (format!("{major}.{minor}.{patch}"), 0) };
    println!("cargo:rustc-env=STRAND_VERSION={version}");
    println!("cargo:rustc-env=STRAND_FORMAT_VERSION={}", 1 + step);
    println!("cargo:rustc-env=STRAND_PROTOCOL_VERSION={}", 1 + step);
    println!("cargo:rerun-if-changed=build.rs");
}
