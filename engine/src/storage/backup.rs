//! Consistent backups and restores.
//!
//! A backup is a redb file with the same three tables, copied from one read snapshot, so the
//! data, the journal and the metadata (with its history records) agree exactly. It is written
//! under a temporary name and renamed into place only when complete.
//!
//! Restoring creates a *new* instance from a backup: a new name, a new creation id, optionally
//! supplementary, keeping the journal and history so that replication can resume from the
//! backup's seqno (this is how GT.M's `-updateresync` is satisfied). Restore is an offline
//! operation on a data directory that no server is using.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::meta::{InstanceMeta, RestoredFrom, Role};
use super::{
    DATA, DB_FILE, JOURNAL, META, META_INSTANCE, STREAMS, Store, StoreError, now_micros, read_meta, redb_err,
};

/// The metadata key that marks a file as a backup and says of what.
const META_BACKUP: &str = "backup";
/// Entries copied per intermediate commit, bounding the backup's memory use.
const BACKUP_CHUNK_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub path: PathBuf,
    pub name: String,
    pub creation_id: String,
    pub journal_seqno: u64,
    /// Entries of the data table copied: nodes (storage::node), one per string key, one
    /// per collection element plus its head. Backups written before the data model call it
    /// `keys`.
    #[serde(alias = "keys")]
    pub nodes: u64,
    pub taken_at_micros: u64,
}

/// Writes a consistent backup of `store` to `path`, which must not exist yet.
pub fn backup(store: &Store, path: &Path) -> Result<BackupInfo, StoreError> {
    if !path.is_absolute() {
        return Err(StoreError::Invalid {
            reason: format!("backup path {} must be absolute", path.display()),
        });
    }
    if path.exists() {
        return Err(StoreError::Invalid {
            reason: format!("backup path {} already exists; choose a new file", path.display()),
        });
    }
    let tmp = path.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let result = write_backup(store, path, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_backup(store: &Store, path: &Path, tmp: &Path) -> Result<BackupInfo, StoreError> {
    let source = store.db()?;
    let snapshot = source.begin_read().map_err(redb_err("begin a read transaction"))?;
    let target = Database::create(tmp).map_err(|source| StoreError::Open { path: tmp.to_owned(), source })?;

    let meta_bytes = {
        let table = snapshot.open_table(META).map_err(redb_err("open the metadata table"))?;
        let bytes = table.get(META_INSTANCE).map_err(redb_err("read instance metadata"))?;
        bytes
            .map(|b| b.value().to_vec())
            .ok_or_else(|| StoreError::Invalid { reason: "instance has no metadata".into() })?
    };
    let meta: InstanceMeta =
        serde_json::from_slice(&meta_bytes).map_err(|source| StoreError::MetaDecode { source })?;
    // Where the (trimmed) journal begins travels with it.
    let journal_base = super::retention::base_in(&snapshot)?;

    let data = snapshot.open_table(DATA).map_err(redb_err("open the data table"))?;
    let journal = snapshot.open_table(JOURNAL).map_err(redb_err("open the journal table"))?;
    let journal_seqno =
        journal.last().map_err(redb_err("read the journal"))?.map_or(journal_base.seqno, |(k, _)| k.value());

    let mut nodes = 0u64;
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(BACKUP_CHUNK_ENTRIES);
    for entry in data.iter().map_err(redb_err("read the data"))? {
        let (k, v) = entry.map_err(redb_err("read the data"))?;
        pending.push((k.value().to_vec(), v.value().to_vec()));
        nodes += 1;
        if pending.len() == BACKUP_CHUNK_ENTRIES {
            copy_chunk(&target, &mut pending, |t, k, v| {
                t.open_table(DATA)?.insert(k, v)?;
                Ok(())
            })?;
        }
    }
    copy_chunk(&target, &mut pending, |t, k, v| {
        t.open_table(DATA)?.insert(k, v)?;
        Ok(())
    })?;
    for entry in journal.iter().map_err(redb_err("read the journal"))? {
        let (k, v) = entry.map_err(redb_err("read the journal"))?;
        pending.push((k.value().to_le_bytes().to_vec(), v.value().to_vec()));
        if pending.len() == BACKUP_CHUNK_ENTRIES {
            copy_chunk(&target, &mut pending, copy_journal_entry)?;
        }
    }
    copy_chunk(&target, &mut pending, copy_journal_entry)?;
    let streams = match snapshot.open_table(STREAMS) {
        Ok(table) => {
            let mut out = Vec::new();
            for entry in table.iter().map_err(redb_err("read the streams table"))? {
                let (k, v) = entry.map_err(redb_err("read the streams table"))?;
                out.push((k.value(), v.value()));
            }
            out
        }
        Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
        Err(e) => return Err(redb_err("open the streams table")(e)),
    };

    let info = BackupInfo {
        path: path.to_owned(),
        name: meta.name.clone(),
        creation_id: meta.creation_id.clone(),
        journal_seqno,
        nodes,
        taken_at_micros: now_micros(),
    };
    let txn = target.begin_write().map_err(redb_err("begin a write transaction"))?;
    {
        let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
        table.insert(META_INSTANCE, meta_bytes.as_slice()).map_err(redb_err("write metadata"))?;
        let backup_bytes = serde_json::to_vec(&info).map_err(|source| StoreError::MetaDecode { source })?;
        table.insert(META_BACKUP, backup_bytes.as_slice()).map_err(redb_err("write metadata"))?;
        if journal_base.seqno > 0 {
            let bytes =
                serde_json::to_vec(&journal_base).map_err(|source| StoreError::MetaDecode { source })?;
            table
                .insert(super::retention::META_JOURNAL_BASE, bytes.as_slice())
                .map_err(redb_err("write metadata"))?;
        }
        txn.open_table(DATA).map_err(redb_err("create the data table"))?;
        txn.open_table(JOURNAL).map_err(redb_err("create the journal table"))?;
        let mut table = txn.open_table(STREAMS).map_err(redb_err("create the streams table"))?;
        for (k, v) in streams {
            table.insert(k, v).map_err(redb_err("write the streams table"))?;
        }
    }
    txn.commit().map_err(redb_err("commit the backup"))?;
    drop(target);
    std::fs::rename(tmp, path).map_err(|source| StoreError::CreateDir { path: path.to_owned(), source })?;
    sync_parent(path)?;
    tracing::info!(path = %path.display(), journal_seqno, nodes, "backup written");
    Ok(info)
}

fn copy_journal_entry(t: &redb::WriteTransaction, k: &[u8], v: &[u8]) -> Result<(), redb::Error> {
    let seqno = u64::from_le_bytes(k.try_into().map_err(|_| redb::Error::Corrupted("journal key".into()))?);
    t.open_table(JOURNAL)?.insert(seqno, v)?;
    Ok(())
}

fn copy_chunk(
    target: &Database,
    pending: &mut Vec<(Vec<u8>, Vec<u8>)>,
    insert: impl Fn(&redb::WriteTransaction, &[u8], &[u8]) -> Result<(), redb::Error>,
) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut txn = target.begin_write().map_err(redb_err("begin a write transaction"))?;
    // Intermediate chunks need not be durable: the file is renamed into place only after the
    // final, durable commit.
    txn.set_durability(Durability::None).map_err(|e| StoreError::Invalid { reason: e.to_string() })?;
    for (k, v) in pending.drain(..) {
        insert(&txn, &k, &v).map_err(|source| StoreError::Redb { step: "copy into the backup", source })?;
    }
    txn.commit().map_err(redb_err("commit a backup chunk"))
}

fn sync_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(parent) => super::sync_dir(parent)
            .map_err(|source| StoreError::CreateDir { path: parent.to_owned(), source }),
        None => Ok(()),
    }
}

/// Reads the description of a backup file without changing it.
pub fn describe(path: &Path) -> Result<BackupInfo, StoreError> {
    let db = Database::open(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    let txn = db.begin_read().map_err(redb_err("begin a read transaction"))?;
    let table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
    let bytes = table.get(META_BACKUP).map_err(redb_err("read backup metadata"))?.ok_or_else(|| {
        StoreError::Invalid { reason: format!("{} is not a Strand backup", path.display()) }
    })?;
    serde_json::from_slice(bytes.value()).map_err(|source| StoreError::MetaDecode { source })
}

/// The instance metadata a backup carries (its history, above all).
pub fn backup_meta(path: &Path) -> Result<InstanceMeta, StoreError> {
    let db = Database::open(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    read_meta(&db)?
        .ok_or_else(|| StoreError::Invalid { reason: format!("{} has no instance metadata", path.display()) })
}

/// Creates a new instance in `data_dir` from the backup at `backup_path`, with a new identity.
pub fn restore(
    backup_path: &Path,
    data_dir: &Path,
    name: &str,
    supplementary: bool,
) -> Result<InstanceMeta, StoreError> {
    super::meta::validate_name(name).map_err(|reason| StoreError::Invalid { reason })?;
    let info = describe(backup_path)?;
    std::fs::create_dir_all(data_dir)
        .map_err(|source| StoreError::CreateDir { path: data_dir.to_owned(), source })?;
    let final_path = data_dir.join(DB_FILE);
    if final_path.exists() {
        return Err(StoreError::Invalid {
            reason: format!(
                "{} already holds an instance; restore into an empty data directory",
                data_dir.display()
            ),
        });
    }
    let tmp = data_dir.join(format!("{DB_FILE}.restoring"));
    std::fs::copy(backup_path, &tmp).map_err(|source| StoreError::CreateDir { path: tmp.clone(), source })?;
    let db = Database::create(&tmp).map_err(|source| StoreError::Open { path: tmp.clone(), source })?;
    let mut meta = read_meta(&db)?
        .ok_or_else(|| StoreError::Invalid { reason: "backup has no instance metadata".into() })?;
    let backup_seqno = info.journal_seqno;
    meta.restored_from = Some(RestoredFrom {
        name: info.name,
        creation_id: info.creation_id,
        journal_seqno: info.journal_seqno,
    });
    if meta.supplementary && !supplementary {
        return Err(StoreError::Invalid {
            reason: format!(
                "{} is a backup of the supplementary {}; it restores only as a supplementary instance (--supplementary)",
                backup_path.display(),
                meta.name
            ),
        });
    }
    // A supplementary instance made from a backup of a non-supplementary one starts its own
    // family: its transactions are its own from here on, numbered in stream 0 after what the
    // backup holds; its SI stream is seeded later by `receiver start --updateresync`.
    let new_family = supplementary && !meta.supplementary;
    meta.name = name.to_owned();
    meta.creation_id = super::meta::new_creation_id().map_err(|source| StoreError::Random { source })?;
    meta.supplementary = supplementary;
    meta.role = Role::Standalone;
    meta.created_at_micros = now_micros();
    meta.receiver = None;
    meta.sources.clear();
    if new_family {
        meta.history = InstanceMeta::new(meta.name.clone(), true, meta.creation_id.clone(), 0).history;
        meta.streams.clear();
    }
    let txn = db.begin_write().map_err(redb_err("begin a write transaction"))?;
    {
        if new_family {
            let mut table = txn.open_table(STREAMS).map_err(redb_err("open the streams table"))?;
            table.insert(0, backup_seqno).map_err(redb_err("write the streams table"))?;
        }
        let mut table = txn.open_table(META).map_err(redb_err("open the metadata table"))?;
        let bytes = serde_json::to_vec(&meta).map_err(|source| StoreError::MetaDecode { source })?;
        table.insert(META_INSTANCE, bytes.as_slice()).map_err(redb_err("write instance metadata"))?;
        table.remove(META_BACKUP).map_err(redb_err("write instance metadata"))?;
    }
    txn.commit().map_err(redb_err("commit the restored metadata"))?;
    drop(db);
    std::fs::rename(&tmp, &final_path)
        .map_err(|source| StoreError::CreateDir { path: final_path.clone(), source })?;
    sync_parent(&final_path)?;
    tracing::info!(instance = %meta.name, from = %backup_path.display(), "restored instance from backup");
    Ok(meta)
}
