//! Disks for the power-cut tests: a backing directory shown through cutfs (tests/cutfs) at a
//! mount point, and the seed and rounds those tests share.

use std::path::{Path, PathBuf};

use strand_cutfs::{CutReport, Mount};

/// A power-cut test's seed and number of cycles (`STRAND_POWERCUT_SEED`,
/// `STRAND_POWERCUT_ROUNDS`).
pub fn seed_and_rounds(default_rounds: usize) -> (u64, usize) {
    super::seed_and_rounds("STRAND_POWERCUT_SEED", "STRAND_POWERCUT_ROUNDS", default_rounds)
}

/// A disk: a backing directory and the mount point where cutfs shows it.
pub struct Disk {
    pub backing: PathBuf,
    pub mnt: PathBuf,
}

impl Disk {
    pub fn new(root: &Path, name: &str) -> Disk {
        let backing = root.join(format!("{name}.disk"));
        let mnt = root.join(name);
        std::fs::create_dir_all(&backing).expect("create the backing directory");
        std::fs::create_dir_all(&mnt).expect("create the mount point");
        Disk { backing, mnt }
    }

    pub fn mount(&self) -> Mount {
        Mount::new(&self.backing, &self.mnt).unwrap_or_else(|e| {
            panic!(
                "cannot mount cutfs at {} (needs root, /dev/fuse and fusermount3 from fuse3): {e}",
                self.mnt.display()
            )
        })
    }
}

/// What a cut did, in words.
pub fn describe(r: &CutReport) -> String {
    format!(
        "{} killed, {} bytes in {} files dropped, {} names undone",
        r.killed, r.bytes_dropped, r.files_dropped, r.names_undone
    )
}
