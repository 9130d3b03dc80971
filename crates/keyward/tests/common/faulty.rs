//! A redb storage backend on a real file that fails writes and syncs on
//! demand, for fault-injection tests (shared with keyward-http's tests).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A file-backed redb backend; clones share the file and the switch.
#[derive(Clone, Debug)]
pub struct FaultyBackend {
    file: Arc<File>,
    failing: Arc<AtomicBool>,
    /// Writes and syncs refused so far.
    pub refused: Arc<AtomicU64>,
    /// Reads so far (what redb's page cache did not answer).
    pub reads: Arc<AtomicU64>,
}

impl FaultyBackend {
    /// A backend on the file at `path` (created, or opened as it is).
    pub fn open(path: &std::path::Path) -> Self {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
        Self { file: Arc::new(file), failing: Arc::default(), refused: Arc::default(), reads: Arc::default() }
    }

    /// From now on every write, resize and sync fails (or, with `false`, works again).
    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("injected fault: the disk refuses writes"));
        }
        Ok(())
    }
}

impl redb::StorageBackend for FaultyBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.file.write_all_at(data, offset)
    }
}
