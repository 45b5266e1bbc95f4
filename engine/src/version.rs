//! What this binary is and what it can talk to: its version, the on-disk formats it opens and
//! writes, the replication protocols it speaks. A normal build is format 1, protocol 1; the
//! `next-version` build of the same source is the next minor release, format 2, protocol 2
//! (engine/build.rs). The rules follow the seed's hot-standby upgrade (docs/upgrades.md):
//!
//! - a binary opens its own format and the one before it; on the older one it runs in
//!   *version-mismatch* mode (replication and admin only) until the family's `Upgrade` record
//!   reaches it;
//! - replication works between protocols one step apart, in both directions; anything wider
//!   is refused at the handshake naming both versions.

/// The binary version, reported in status, INFO and metrics.
pub const VERSION: &str = env!("STRAND_VERSION");
/// The on-disk format this binary writes (new instances start at it; `upgrade-format` moves
/// an older instance to it).
pub const FORMAT: u32 = parse(env!("STRAND_FORMAT_VERSION"));
/// The replication protocol this binary speaks.
pub const PROTOCOL: u16 = parse(env!("STRAND_PROTOCOL_VERSION")) as u16;
/// What this binary does that a binary of the same protocol may not (admin status
/// `features`): `seed`, a BC receiver seeded from a snapshot (`receiver start --seed`; the
/// source says it can send one in its `Auth`); `seed-si`, an SI receiver too (a family's first
/// stream into a supplementary instance holding nothing of its own).
pub const FEATURES: &[&str] = &["seed", "seed-si"];
/// Every format this binary can open.
pub const FORMATS_SUPPORTED: &[u32] = if FORMAT >= 2 { &[FORMAT - 1, FORMAT] } else { &[FORMAT] };

const _: () = assert!(FORMAT >= 1 && PROTOCOL >= 1);

/// Parses the decimal numbers engine/build.rs sets (at compile time: a bad one fails the build).
const fn parse(s: &str) -> u32 {
    let mut rest = s.as_bytes();
    let mut n: u32 = 0;
    while let [d, tail @ ..] = rest {
        assert!(d.is_ascii_digit(), "version numbers are decimal");
        n = n * 10 + (*d - b'0') as u32;
        rest = tail;
    }
    n
}

/// Whether this binary replicates with a peer speaking protocol `peer`: one step apart at most.
pub fn protocol_compatible(peer: u16) -> bool {
    peer >= 1 && peer.abs_diff(PROTOCOL) <= 1
}

/// Why a peer (`name` running `version`, protocol `protocol`) is refused, naming both sides.
pub fn protocol_refusal(name: &str, version: &str, protocol: u16) -> String {
    let theirs =
        if version.is_empty() { "an unknown version".to_owned() } else { format!("strand {version}") };
    format!(
        "{name} runs {theirs} (replication protocol {protocol}) and this instance runs strand {VERSION} (protocol {PROTOCOL}): replication spans at most one version step; upgrade through the versions in between"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_either_way_and_no_further() {
        assert!(protocol_compatible(PROTOCOL));
        assert!(protocol_compatible(PROTOCOL + 1));
        assert_eq!(protocol_compatible(PROTOCOL - 1), PROTOCOL > 1);
        assert!(!protocol_compatible(PROTOCOL + 2));
        assert!(!protocol_compatible(0));
        let m = protocol_refusal("Ardmore", "9.9.0", PROTOCOL + 2);
        assert!(m.contains("strand 9.9.0") && m.contains(VERSION), "{m}");
        assert!(FORMATS_SUPPORTED.contains(&FORMAT));
    }
}
