//! The spool: flows acknowledged while ClickHouse is unreachable, appended to
//! files under `spool_dir` and fsynced before the insert returns. Each record
//! is a 4-byte little-endian length and an encoded `Flow`; a record cut short
//! by a crash was never acknowledged and is ignored on reading. Files are
//! named by creation time, so replay is in arrival order; a file is removed
//! only once every flow in it is stored.

use netverdict_proto::time::UnixNanos;
use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

const SUFFIX: &str = ".nvspool";

/// The spool directory and the file being appended to.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    current: Option<tokio::fs::File>,
    seq: u64,
}

/// What a spool file holds.
#[derive(Debug)]
pub(crate) struct SpoolFile {
    /// The encoded flows, in order.
    pub records: Vec<Vec<u8>>,
    /// Bytes at the end that do not form a whole record (a write cut short).
    pub torn_bytes: usize,
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

impl Spool {
    /// Opens (creating) the spool directory.
    pub async fn open(dir: &Path) -> io::Result<Spool> {
        tokio::fs::create_dir_all(dir).await?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            current: None,
            seq: 0,
        })
    }

    /// The spool files, oldest first.
    pub async fn files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut rd = tokio::fs::read_dir(&self.dir).await?;
        while let Some(e) = rd.next_entry().await? {
            let path = e.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("spool-") && n.ends_with(SUFFIX))
            {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Appends encoded flows and fsyncs them.
    pub async fn append<'a>(&mut self, records: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            let len = u32::try_from(r.len()).map_err(io::Error::other)?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(r);
        }
        if self.current.is_none() {
            let nanos = UnixNanos::now().nanos_saturating();
            self.seq += 1;
            let name = format!(
                "spool-{nanos:024}-{:010}-{:06}{SUFFIX}",
                std::process::id(),
                self.seq
            );
            let file = tokio::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.dir.join(name))
                .await?;
            sync_dir(&self.dir).await?;
            self.current = Some(file);
        }
        let file = self.current.as_mut().expect("opened above");
        let result = async {
            file.write_all(&buf).await?;
            file.sync_data().await
        }
        .await;
        if result.is_err() {
            // Start a fresh file next time rather than append after a partial write.
            self.current = None;
        }
        result
    }

    /// Closes the file being appended to: the next append starts a new one.
    pub fn seal(&mut self) {
        self.current = None;
    }

    /// Reads a spool file.
    pub async fn read(path: &Path) -> io::Result<SpoolFile> {
        let data = tokio::fs::read(path).await?;
        let mut records = Vec::new();
        let mut rest = &data[..];
        while rest.len() >= 4 {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            if rest.len() - 4 < len {
                break;
            }
            records.push(rest[4..4 + len].to_vec());
            rest = &rest[4 + len..];
        }
        Ok(SpoolFile {
            records,
            torn_bytes: rest.len(),
        })
    }

    /// Removes a file whose flows are all stored.
    pub async fn remove(&self, path: &Path) -> io::Result<()> {
        tokio::fs::remove_file(path).await?;
        sync_dir(&self.dir).await
    }

    /// Moves aside a file that cannot be replayed, keeping it for a person.
    pub async fn quarantine(&self, path: &Path) -> io::Result<PathBuf> {
        let to = path.with_extension("nvspool.failed");
        tokio::fs::rename(path, &to).await?;
        sync_dir(&self.dir).await?;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn append_read_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path()).await.unwrap();
        spool
            .append([b"one".as_slice(), b"two".as_slice()].into_iter())
            .await
            .unwrap();
        spool
            .append([b"three".as_slice()].into_iter())
            .await
            .unwrap();
        spool.seal();
        spool
            .append([b"four".as_slice()].into_iter())
            .await
            .unwrap();
        let files = spool.files().await.unwrap();
        assert_eq!(files.len(), 2);
        let first = Spool::read(&files[0]).await.unwrap();
        assert_eq!(
            first.records,
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        // A write cut short: the whole records before it survive.
        let mut data = std::fs::read(&files[1]).unwrap();
        data.extend_from_slice(&[9, 0, 0, 0, b'x']);
        std::fs::write(&files[1], data).unwrap();
        let second = Spool::read(&files[1]).await.unwrap();
        assert_eq!(second.records, [b"four".to_vec()]);
        assert_eq!(second.torn_bytes, 5);
        spool.remove(&files[0]).await.unwrap();
        assert_eq!(spool.files().await.unwrap(), [files[1].clone()]);
    }
}
