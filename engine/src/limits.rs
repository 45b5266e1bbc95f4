//! Every bound the engine enforces, in one place, named with the unit last.
//!
//! Each limit is checked before the memory it guards is allocated. A client that crosses one
//! gets a Redis-style `-ERR` naming the limit; a protocol-level violation also closes the
//! connection because the byte stream can no longer be trusted.

/// Largest key accepted on the data port.
pub const KEY_BYTES_MAX: usize = 16 * 1024;
/// Largest string value, including one grown by APPEND.
pub const VALUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest single bulk string in a request; anything longer is a protocol error.
pub const RESP_BULK_BYTES_MAX: usize = VALUE_BYTES_MAX;
/// Most arguments in one request (MSET of many keys, for instance).
pub const RESP_ARGS_MAX: usize = 64 * 1024;
/// Longest inline (telnet-style) command line.
pub const RESP_INLINE_BYTES_MAX: usize = 64 * 1024;
/// Most bytes one connection may have buffered but not yet parsed into complete requests.
pub const RESP_REQUEST_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most requests parsed from one read before their replies are written (pipelining window).
pub const PIPELINE_COMMANDS_MAX: usize = 1024;
/// Most commands queued between MULTI and EXEC.
pub const MULTI_COMMANDS_MAX: usize = 10_000;
/// Most argument bytes queued between MULTI and EXEC (bounds a transaction's memory and the
/// size of its journal record).
pub const MULTI_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Default for `--max-txn-image-bytes`: most bytes of node names and before- and
/// after-images one transaction may journal (its
/// record, its undo log and its encoding each hold about this much). A command that would
/// pass it — RENAME or COPY of a collection larger than this, a store of a result this
/// large, DEL or FLUSHALL of more string values than this — is refused with nothing
/// changed, rather than growing its journal record without bound. Deleting a collection of
/// any size stays small: its elements are reclaimed in bounded transactions.
pub const TXN_IMAGE_BYTES_DEFAULT: usize = 1024 * 1024 * 1024;
/// The least `--max-txn-image-bytes` may be.
pub const TXN_IMAGE_BYTES_MIN: usize = 32 * 1024 * 1024;
/// Most keys one WATCH session may watch.
pub const WATCH_KEYS_MAX: usize = 10_000;
/// Default for `--max-clients`: concurrent data-port connections.
pub const CLIENTS_MAX_DEFAULT: usize = 10_000;
/// Most transactions the writer folds into one group (one journal append, one fsync).
pub const GROUP_COMMIT_TXNS_MAX: usize = 1024;
/// The overlay's active generation is frozen and checkpointed once it holds this much; past
/// twice this much in all, the writer waits for the checkpointer (decision 0002).
pub const CHECKPOINT_OVERLAY_BYTES: usize = 64 * 1024 * 1024;
/// Default for `--read-cache-bytes`: nodes recently read from the database file, kept in
/// memory for the next point read of them (emptied by every checkpoint).
pub const READ_CACHE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// A non-empty active generation is frozen and checkpointed at least this often.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// A journal segment is closed and a new one started once it reaches this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Transactions waiting for the writer before submitters are made to wait.
pub const WRITER_QUEUE_TXNS_MAX: usize = 4096;
/// Most journal records one admin journal read returns.
pub const JOURNAL_READ_RECORDS_MAX: u64 = 1000;
/// Most keys one SCAN call may be asked to visit.
pub const SCAN_COUNT_MAX: usize = 100_000;
/// Open SCAN cursors remembered per connection; the oldest is forgotten first.
pub const SCAN_CURSORS_MAX: usize = 64;
/// Largest admin request body.
pub const ADMIN_BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest unreplicated-transaction log the admin API serves whole (bigger ones are read
/// with `ctl lost-transactions show` on the volume).
pub const LOST_LOG_SERVE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Longest role lease one grant may give (the operator renews every few seconds).
pub const LEASE_MS_MAX: u64 = 10 * 60 * 1000;
/// Default free space kept on the data volume: commits are refused below it.
pub const DISK_RESERVE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

// A value must fit in one bulk string, or a legal SET could never be sent.
const _: () = assert!(VALUE_BYTES_MAX <= RESP_BULK_BYTES_MAX);
// A request must be able to hold a maximal key and value together (SET key value).
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX < RESP_REQUEST_BYTES_MAX);
// A transaction queue must hold at least one maximal request.
const _: () = assert!(RESP_REQUEST_BYTES_MAX <= MULTI_BYTES_MAX);
// Any one key can be overwritten (before- and after-image of a maximal value) within the
// smallest bound.
const _: () = assert!(2 * (KEY_BYTES_MAX + VALUE_BYTES_MAX) + 4 * 1024 * 1024 < TXN_IMAGE_BYTES_MIN);
// A transaction can write its largest legal queue of arguments as after-images.
const _: () = assert!(MULTI_BYTES_MAX < TXN_IMAGE_BYTES_DEFAULT);
// A journal record's key count is a u32; every queued key takes at least one byte.
const _: () = assert!(MULTI_BYTES_MAX < u32::MAX as usize);
// Journal image lengths are u32 on disk.
const _: () = assert!(VALUE_BYTES_MAX < u32::MAX as usize);
