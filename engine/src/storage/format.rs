//! On-disk formats and the move from one to the next (docs/upgrades.md).
//!
//! - **Format 1**: the `data`, `journal`, `meta` and `streams` tables.
//! - **Format 2** adds the `catalog` table: what the data was upgraded with (the format, the
//!   value of the key the older primary was prepared with, the seqno of the upgrade).
//!
//! A format change is itself a journaled transaction — the `Upgrade` record — that writes the
//! system key [`FORMAT_KEY`]: it replicates, and a secondary that replays it upgrades its own
//! format in the same commit (the seed's "the new slave's image will be upgraded … via the
//! transaction log replay"). Format 2 needs [`PREPARED_KEY`] to exist first, created on the
//! older primary by `ctl prepare-upgrade` as an ordinary journaled write, so it replicates
//! (the seed's `#OptimizedSelectors` symbol). Keys under [`SYSTEM_PREFIX`] are the engine's:
//! clients read them but cannot write them.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{DATA, StoreError, redb_err};

/// Keys the engine writes itself (through its admin API); the data port refuses writes to them.
pub const SYSTEM_PREFIX: &[u8] = b"__strand/";
/// The data's format, as the last `Upgrade` record set it (absent: format 1).
pub const FORMAT_KEY: &[u8] = b"__strand/format";
/// What format 2 needs to exist before the switch (the seed's `#OptimizedSelectors`).
pub const PREPARED_KEY: &[u8] = b"__strand/optimized-selectors";
/// Format 2's catalog table.
pub(crate) const CATALOG: TableDefinition<&str, &str> = TableDefinition::new("catalog");

pub fn is_system_key(key: &[u8]) -> bool {
    key.starts_with(SYSTEM_PREFIX)
}

/// Why the data cannot move to `to` now (`None`: it can). `format` is the data's format.
pub fn upgrade_blocker(format: u32, to: u32, prepared: bool) -> Option<String> {
    if to <= format {
        return Some(format!("the data already is at format {format}"));
    }
    if to != format + 1 {
        return Some(format!("formats move one step at a time: {format} → {}, not {to}", format + 1));
    }
    if !crate::version::FORMATS_SUPPORTED.contains(&to) {
        return Some(format!("strand {} does not write format {to}", crate::VERSION));
    }
    if to == 2 && !prepared {
        return Some(format!(
            "format 2 needs {} to exist, created on the primary before the switch: run `ctl prepare-upgrade` on the older primary (it replicates), then upgrade",
            String::from_utf8_lossy(PREPARED_KEY)
        ));
    }
    None
}

/// Creates what format `format` has beyond format 1 for a new instance.
pub(crate) fn create(txn: &WriteTransaction, format: u32, seqno: u64) -> Result<(), StoreError> {
    if format >= 2 {
        fill_catalog(txn, format, "new instance", seqno)?;
    }
    Ok(())
}

/// Moves the data in `txn` from format `from` to `to` (one step), in the commit that holds
/// the `Upgrade` record at `seqno`.
pub(crate) fn migrate(txn: &WriteTransaction, from: u32, to: u32, seqno: u64) -> Result<(), StoreError> {
    if to != from + 1 || !crate::version::FORMATS_SUPPORTED.contains(&to) {
        return Err(StoreError::FormatVersion { found: to, supported: crate::version::FORMATS_SUPPORTED });
    }
    let prepared = {
        let data = txn.open_table(DATA).map_err(redb_err("open the data table"))?;
        data.get(PREPARED_KEY)
            .map_err(redb_err("read a key"))?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned())
    };
    let prepared = prepared.ok_or_else(|| StoreError::Invalid {
        reason: format!("format {to} needs {} to exist", String::from_utf8_lossy(PREPARED_KEY)),
    })?;
    fill_catalog(txn, to, &prepared, seqno)
}

fn fill_catalog(txn: &WriteTransaction, format: u32, prepared: &str, seqno: u64) -> Result<(), StoreError> {
    let mut catalog = txn.open_table(CATALOG).map_err(redb_err("open the catalog table"))?;
    let format = format.to_string();
    let seqno = seqno.to_string();
    for (k, v) in [
        ("format", format.as_str()),
        ("optimized-selectors", prepared),
        ("upgraded-at-seqno", seqno.as_str()),
    ] {
        catalog.insert(k, v).map_err(redb_err("write the catalog"))?;
    }
    Ok(())
}

/// The format a `FORMAT_KEY` value names.
pub fn parse_format(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_go_one_step_and_need_the_prepared_key() {
        assert!(upgrade_blocker(1, 1, true).is_some());
        assert!(upgrade_blocker(1, 3, true).unwrap().contains("one step"));
        assert!(
            upgrade_blocker(1, 2, false)
                .map_or(crate::version::FORMAT < 2, |m| m.contains("prepare-upgrade")
                    || m.contains("does not write"))
        );
        assert_eq!(upgrade_blocker(1, 2, true).is_none(), crate::version::FORMAT >= 2);
        assert!(is_system_key(FORMAT_KEY) && is_system_key(PREPARED_KEY) && !is_system_key(b"user"));
        assert_eq!(parse_format(b"2"), Some(2));
        assert_eq!(parse_format(b"x"), None);
    }
}
