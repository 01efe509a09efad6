//! The spool: flows acknowledged while ClickHouse does not take them, kept on
//! local disk (fsynced before the acknowledgement) until the writer has
//! replayed them into ClickHouse.
//!
//! On disk it is a directory of **segments**, `seg-<sequence>.nvs`, appended
//! to one at a time and sealed at [`SpoolConfig::segment_bytes`] (or when a
//! replay starts), so replay streams one file at a time and removes each once
//! every flow in it is stored. A segment starts with the 8-byte header
//! `NVSPOOL1`; each record is
//!
//! ```text
//! magic u32 LE (0x5256_4e91) | length u32 LE | crc32 u32 LE of length ++ payload | payload
//! ```
//!
//! where the payload is one encoded `Flow` of at most [`MAX_RECORD_BYTES`].
//! [`RecordReader`] reads records in bounded memory (one record, at most
//! [`MAX_RECORD_BYTES`], at a time). A record whose magic, length or checksum
//! is wrong is **corrupt**: the reader looks for the next position where a
//! whole valid record starts and hands over the bytes in between (which the
//! replay moves to `quarantine/` for a person), so the records after a
//! corrupt one are kept. Bytes at the end that form no whole record are a
//! write cut short by a crash: never acknowledged, ignored.
//!
//! Files of the earlier format (`spool-*.nvspool`: 4-byte length and payload,
//! no header, no checksum) are still read, oldest first.
//!
//! **When the spool is full** ([`SpoolConfig::max_bytes`]), [`Spool::append`]
//! fails with [`SpoolError::Full`]: the insert is not acknowledged, so
//! collectors keep their flows, back off and send them again; nothing
//! acknowledged is ever dropped to make room.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// The header every segment starts with.
pub(crate) const SEGMENT_HEADER: &[u8; 8] = b"NVSPOOL1";
/// The first four bytes of every record.
pub(crate) const RECORD_MAGIC: u32 = 0x5256_4e91;
/// The largest payload a record may hold (a flow is far smaller: ingest
/// messages are bounded well below this).
pub const MAX_RECORD_BYTES: usize = 16 << 20;
/// Magic, length and checksum.
const RECORD_HEADER_BYTES: usize = 12;
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".nvs";
const LEGACY_PREFIX: &str = "spool-";
const LEGACY_SUFFIX: &str = ".nvspool";
/// Where corrupt bytes go, under the spool directory.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Appending would take the spool past its cap: nothing was written.
    #[error("the spool is full: {used} of {cap} bytes used, {needed} more needed")]
    Full {
        /// Bytes the spool holds.
        used: u64,
        /// [`SpoolConfig::max_bytes`].
        cap: u64,
        /// Bytes the append needed.
        needed: u64,
    },
    /// A record larger than [`MAX_RECORD_BYTES`].
    #[error("a spool record of {0} bytes is above the {MAX_RECORD_BYTES}-byte limit")]
    RecordTooLarge(usize),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The result of spool operations.
pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where the spool lives and how large it may grow.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// The most bytes the segments may hold in all.
    pub max_bytes: u64,
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
}

/// One encoded record.
pub(crate) fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if payload.len() > MAX_RECORD_BYTES {
        return Err(SpoolError::RecordTooLarge(payload.len()));
    }
    // Below MAX_RECORD_BYTES: fits.
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn checksum(len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// A segment or earlier-format file, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SegmentName {
    /// `spool-<time>-<pid>-<n>.nvspool`, written before segments existed
    /// (ordered first: older).
    Legacy(String),
    /// `seg-<sequence>.nvs`.
    Segment(u64),
}

impl SegmentName {
    fn parse(name: &str) -> Option<SegmentName> {
        if let Some(seq) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
        {
            return seq.parse().ok().map(SegmentName::Segment);
        }
        (name.starts_with(LEGACY_PREFIX) && name.ends_with(LEGACY_SUFFIX))
            .then(|| SegmentName::Legacy(name.to_string()))
    }

    fn file_name(&self) -> String {
        match self {
            SegmentName::Legacy(name) => name.clone(),
            SegmentName::Segment(seq) => format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}"),
        }
    }
}

/// A spool file to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub name: SegmentName,
    pub path: PathBuf,
    pub bytes: u64,
}

/// The segment being appended to.
#[derive(Debug)]
struct Open {
    file: tokio::fs::File,
    seq: u64,
    bytes: u64,
}

/// The writer's side of the spool: appends, seals, lists and removes
/// segments, and keeps the byte count the cap applies to.
#[derive(Debug)]
pub(crate) struct Spool {
    config: SpoolConfig,
    current: Option<Open>,
    next_seq: u64,
    /// Bytes of every segment on disk.
    used: u64,
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&owned)?.sync_all())
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(io_error("syncing", dir))
}

impl Spool {
    /// Opens (creating) the spool directory and measures what it holds.
    pub async fn open(config: SpoolConfig) -> Result<Spool> {
        tokio::fs::create_dir_all(&config.dir)
            .await
            .map_err(io_error("creating", &config.dir))?;
        let mut spool = Spool {
            config,
            current: None,
            next_seq: 1,
            used: 0,
        };
        let segments = spool.segments().await?;
        spool.used = segments.iter().map(|s| s.bytes).sum();
        spool.next_seq = segments
            .iter()
            .filter_map(|s| match s.name {
                SegmentName::Segment(seq) => Some(seq + 1),
                SegmentName::Legacy(_) => None,
            })
            .max()
            .unwrap_or(1);
        Ok(spool)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Bytes the spool holds on disk.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Every spool file, oldest first (the one being appended to included).
    pub async fn segments(&self) -> Result<Vec<Segment>> {
        let dir = &self.config.dir;
        let mut found = Vec::new();
        let mut rd = tokio::fs::read_dir(dir)
            .await
            .map_err(io_error("listing", dir))?;
        while let Some(e) = rd.next_entry().await.map_err(io_error("listing", dir))? {
            let Some(name) = e.file_name().to_str().and_then(SegmentName::parse) else {
                continue;
            };
            let bytes = e
                .metadata()
                .await
                .map_err(io_error("reading the size of", &e.path()))?
                .len();
            found.push(Segment {
                name,
                path: e.path(),
                bytes,
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The sealed segments, oldest first: what a replay may read.
    pub async fn sealed(&self) -> Result<Vec<Segment>> {
        let open = self.current.as_ref().map(|o| SegmentName::Segment(o.seq));
        let mut segments = self.segments().await?;
        segments.retain(|s| Some(&s.name) != open.as_ref());
        Ok(segments)
    }

    /// Appends encoded flows and fsyncs them; fails with [`SpoolError::Full`]
    /// (writing nothing) when they do not fit under the cap.
    pub async fn append<'a>(&mut self, records: impl Iterator<Item = &'a [u8]>) -> Result<u64> {
        let mut buf = Vec::new();
        for r in records {
            encode_record(r, &mut buf)?;
        }
        let header = if self.current.is_none() {
            SEGMENT_HEADER.len() as u64
        } else {
            0
        };
        let needed = buf.len() as u64 + header;
        if self.used.saturating_add(needed) > self.config.max_bytes {
            return Err(SpoolError::Full {
                used: self.used,
                cap: self.config.max_bytes,
                needed,
            });
        }
        if self.current.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.config.dir.join(SegmentName::Segment(seq).file_name());
            let mut file = tokio::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .await
                .map_err(io_error("creating", &path))?;
            file.write_all(SEGMENT_HEADER)
                .await
                .map_err(io_error("writing", &path))?;
            sync_dir(&self.config.dir).await?;
            self.used += SEGMENT_HEADER.len() as u64;
            self.current = Some(Open {
                file,
                seq,
                bytes: SEGMENT_HEADER.len() as u64,
            });
        }
        let Some(open) = self.current.as_mut() else {
            unreachable!("opened above");
        };
        let written = async {
            open.file.write_all(&buf).await?;
            open.file.sync_data().await
        }
        .await;
        match written {
            Ok(()) => {
                open.bytes += buf.len() as u64;
                self.used += buf.len() as u64;
                if open.bytes >= self.config.segment_bytes {
                    self.seal();
                }
                Ok(buf.len() as u64)
            }
            Err(source) => {
                // A partial write may sit at the end: start a fresh segment
                // next time rather than append after it (the reader skips it).
                let path = self
                    .config
                    .dir
                    .join(SegmentName::Segment(open.seq).file_name());
                self.current = None;
                Err(SpoolError::Io {
                    what: "appending to",
                    path,
                    source,
                })
            }
        }
    }

    /// Closes the segment being appended to: the next append starts a new one.
    pub fn seal(&mut self) {
        self.current = None;
    }

    /// Removes a segment whose flows are all stored.
    pub async fn remove(&mut self, segment: &Segment) -> Result<()> {
        tokio::fs::remove_file(&segment.path)
            .await
            .map_err(io_error("removing", &segment.path))?;
        sync_dir(&self.config.dir).await?;
        self.used = self.used.saturating_sub(segment.bytes);
        Ok(())
    }
}

/// What a [`RecordReader`] finds next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A whole record whose checksum holds.
    Record {
        /// Where it starts in the file.
        offset: u64,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// Bytes that belong to no valid record, followed by a valid one: a
    /// corrupt record (or part of one). At most 64 KiB per item; a longer
    /// stretch comes as consecutive items.
    Corrupt {
        /// Where they start in the file.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Bytes at the end of the file that form no whole record (a write cut
    /// short: never acknowledged).
    Torn {
        /// Where they start.
        offset: u64,
        /// How many.
        len: u64,
    },
}

/// The most corrupt bytes one [`Item::Corrupt`] carries.
const CORRUPT_PIECE: usize = 64 << 10;

/// Reads the records of one spool file in bounded memory: at most one
/// record ([`MAX_RECORD_BYTES`]) and a read buffer are held at a time.
pub struct RecordReader<R> {
    src: R,
    legacy: bool,
    /// Read but not consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// The file offset of `buf[pos]`.
    offset: u64,
    eof: bool,
    /// Nothing more to read (the end, or a read error).
    done: bool,
}

impl<R: Read> RecordReader<R> {
    /// A reader of a segment (its header is checked first) or, with
    /// `legacy`, of a file of the earlier format.
    pub fn new(src: R, legacy: bool) -> RecordReader<R> {
        RecordReader {
            src,
            legacy,
            buf: Vec::new(),
            pos: 0,
            offset: 0,
            eof: false,
            done: false,
        }
    }

    /// Makes at least `n` bytes available at `pos` unless the file ends
    /// first; returns how many are.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        if self.pos > 0 && self.buf.len() - self.pos < n {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        while self.buf.len() - self.pos < n && !self.eof {
            let want = (n - (self.buf.len() - self.pos)).max(64 << 10);
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let got = loop {
                match self.src.read(&mut self.buf[start..]) {
                    Ok(got) => break got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.buf.truncate(start);
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(start + got);
            if got == 0 {
                self.eof = true;
            }
        }
        Ok(self.buf.len() - self.pos)
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        self.offset += n as u64;
        out
    }

    /// The length of the valid record at `pos + at`, if one starts there
    /// (reading as much as it needs).
    fn valid_at(&mut self, at: usize) -> io::Result<Option<usize>> {
        if self.fill(at + RECORD_HEADER_BYTES)? < at + RECORD_HEADER_BYTES {
            return Ok(None);
        }
        let h = &self.buf[self.pos + at..self.pos + at + RECORD_HEADER_BYTES];
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (magic, len, crc) = (word(0), word(4), word(8));
        let len_bytes = len.to_le_bytes();
        let len = len as usize;
        if magic != RECORD_MAGIC || len > MAX_RECORD_BYTES {
            return Ok(None);
        }
        let whole = at + RECORD_HEADER_BYTES + len;
        if self.fill(whole)? < whole {
            return Ok(None);
        }
        let start = self.pos + at + RECORD_HEADER_BYTES;
        let payload = &self.buf[start..start + len];
        Ok((checksum(&len_bytes, payload) == crc).then_some(RECORD_HEADER_BYTES + len))
    }

    fn next_segment_item(&mut self) -> io::Result<Option<Item>> {
        if self.offset == 0 {
            let have = self.fill(SEGMENT_HEADER.len())?;
            if have >= SEGMENT_HEADER.len()
                && &self.buf[self.pos..self.pos + SEGMENT_HEADER.len()] == SEGMENT_HEADER
            {
                self.consume(SEGMENT_HEADER.len());
            }
            // Otherwise the header itself is corrupt: what follows is
            // scanned like any corrupt stretch.
        }
        if self.fill(1)? == 0 {
            return Ok(None);
        }
        let offset = self.offset;
        if let Some(n) = self.valid_at(0)? {
            let record = self.consume(n);
            return Ok(Some(Item::Record {
                offset,
                payload: record[RECORD_HEADER_BYTES..].to_vec(),
            }));
        }
        // Not a valid record here: find where the next one starts.
        let mut skip = 1;
        loop {
            if skip == CORRUPT_PIECE {
                return Ok(Some(Item::Corrupt {
                    offset,
                    bytes: self.consume(skip),
                }));
            }
            if self.fill(skip + 1)? <= skip {
                // The file ends with no valid record after `offset`.
                let len = (self.buf.len() - self.pos) as u64;
                self.pos = self.buf.len();
                self.offset += len;
                return Ok(Some(Item::Torn { offset, len }));
            }
            if self.valid_at(skip)?.is_some() {
                return Ok(Some(Item::Corrupt {
                    offset,
                    bytes: self.consume(skip),
                }));
            }
            skip += 1;
        }
    }

    fn next_legacy_item(&mut self) -> io::Result<Option<Item>> {
        let have = self.fill(4)?;
        if have == 0 {
            return Ok(None);
        }
        let offset = self.offset;
        let torn = |this: &mut Self| {
            let len = (this.buf.len() - this.pos) as u64;
            this.pos = this.buf.len();
            this.offset += len;
            Ok(Some(Item::Torn { offset, len }))
        };
        if have < 4 {
            return torn(self);
        }
        let b = &self.buf[self.pos..self.pos + 4];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len > MAX_RECORD_BYTES || self.fill(4 + len)? < 4 + len {
            // No checksum to resynchronise on: the rest is unreadable.
            return torn(self);
        }
        let record = self.consume(4 + len);
        Ok(Some(Item::Record {
            offset,
            payload: record[4..].to_vec(),
        }))
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = io::Result<Item>;

    fn next(&mut self) -> Option<io::Result<Item>> {
        if self.done {
            return None;
        }
        let item = if self.legacy {
            self.next_legacy_item()
        } else {
            self.next_segment_item()
        };
        match item {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Whether `segment` is of the earlier format.
pub(crate) fn is_legacy(segment: &Segment) -> bool {
    matches!(segment.name, SegmentName::Legacy(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 1 << 20,
        }
    }

    fn read_all(bytes: &[u8], legacy: bool) -> Vec<Item> {
        RecordReader::new(bytes, legacy)
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    fn records(items: &[Item]) -> Vec<&[u8]> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Record { payload, .. } => Some(payload.as_slice()),
                _ => None,
            })
            .collect()
    }

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = SEGMENT_HEADER.to_vec();
        for p in payloads {
            encode_record(p, &mut out).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn append_seal_read_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(config(dir.path())).await.unwrap();
        spool
            .append([b"one".as_slice(), b"two".as_slice()].into_iter())
            .await
            .unwrap();
        spool
            .append([b"three".as_slice()].into_iter())
            .await
            .unwrap();
        assert!(spool.sealed().await.unwrap().is_empty(), "still open");
        spool.seal();
        spool
            .append([b"four".as_slice()].into_iter())
            .await
            .unwrap();
        let all = spool.segments().await.unwrap();
        assert_eq!(all.len(), 2);
        let sealed = spool.sealed().await.unwrap();
        assert_eq!(sealed, all[..1]);
        let used: u64 = all.iter().map(|s| s.bytes).sum();
        assert_eq!(spool.used_bytes(), used);
        let data = std::fs::read(&sealed[0].path).unwrap();
        assert_eq!(
            records(&read_all(&data, false)),
            [b"one".as_slice(), b"two", b"three"]
        );
        spool.remove(&sealed[0]).await.unwrap();
        assert_eq!(spool.segments().await.unwrap(), all[1..]);
        assert_eq!(spool.used_bytes(), all[1].bytes);
        // A new process numbers its segments after the ones left.
        drop(spool);
        let mut again = Spool::open(config(dir.path())).await.unwrap();
        assert_eq!(again.used_bytes(), all[1].bytes);
        again
            .append([b"five".as_slice()].into_iter())
            .await
            .unwrap();
        let names: Vec<SegmentName> = again
            .segments()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, [SegmentName::Segment(2), SegmentName::Segment(3)]);
    }

    #[tokio::test]
    async fn segments_roll_at_their_size_and_the_cap_refuses_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 200,
            segment_bytes: 40,
        })
        .await
        .unwrap();
        let payload = [7u8; 20];
        // 8 header + 32 per record: one record fills a segment.
        for _ in 0..5 {
            spool
                .append([payload.as_slice()].into_iter())
                .await
                .unwrap();
        }
        assert_eq!(spool.segments().await.unwrap().len(), 5);
        assert_eq!(spool.used_bytes(), 200);
        let err = spool
            .append([payload.as_slice()].into_iter())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SpoolError::Full {
                    used: 200,
                    cap: 200,
                    needed: 40
                }
            ),
            "{err}"
        );
        assert_eq!(spool.segments().await.unwrap().len(), 5, "nothing written");
        let first = spool.segments().await.unwrap().remove(0);
        spool.remove(&first).await.unwrap();
        spool
            .append([payload.as_slice()].into_iter())
            .await
            .unwrap();
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_the_records_after_it_kept() {
        let data = segment(&[b"first", b"second", b"third"]);
        // Each record: 12 header bytes + payload; corrupt the second's length.
        let second = SEGMENT_HEADER.len() + 12 + 5;
        for (what, at, value) in [
            ("length", second + 4, 0xff),
            ("magic", second, 0x01),
            ("checksum", second + 8, 0x55),
            ("payload", second + 12, b'X'),
        ] {
            let mut bad = data.clone();
            bad[at] ^= value;
            let items = read_all(&bad, false);
            assert_eq!(
                records(&items),
                [b"first".as_slice(), b"third"],
                "{what}: {items:?}"
            );
            assert!(
                items.iter().any(|i| matches!(
                    i,
                    Item::Corrupt { offset, bytes } if *offset == second as u64 && bytes.len() == 18
                )),
                "{what}: {items:?}"
            );
        }
    }

    #[test]
    fn a_torn_tail_is_not_a_corrupt_record() {
        let mut data = segment(&[b"first"]);
        let whole = data.len();
        let mut tail = Vec::new();
        encode_record(b"cut short", &mut tail).unwrap();
        data.extend_from_slice(&tail[..10]);
        let items = read_all(&data, false);
        assert_eq!(records(&items), [b"first".as_slice()]);
        assert_eq!(
            items.last(),
            Some(&Item::Torn {
                offset: whole as u64,
                len: 10
            })
        );
    }

    #[test]
    fn garbage_and_empty_input_yield_no_record() {
        assert!(read_all(b"", false).is_empty());
        let junk = vec![0xabu8; 200_000];
        let items = read_all(&junk, false);
        assert!(records(&items).is_empty());
        let total: u64 = items
            .iter()
            .map(|i| match i {
                Item::Corrupt { bytes, .. } => bytes.len() as u64,
                Item::Torn { len, .. } => *len,
                Item::Record { .. } => 0,
            })
            .sum();
        assert_eq!(total, 200_000, "every byte accounted for");
    }

    #[test]
    fn earlier_format_files_are_read() {
        let mut data = Vec::new();
        for p in [b"one".as_slice(), b"two"] {
            data.extend_from_slice(&(p.len() as u32).to_le_bytes());
            data.extend_from_slice(p);
        }
        data.extend_from_slice(&[9, 0, 0, 0, b'x']);
        let items = read_all(&data, true);
        assert_eq!(records(&items), [b"one".as_slice(), b"two"]);
        assert_eq!(items.last(), Some(&Item::Torn { offset: 14, len: 5 }));
    }

    #[test]
    fn names_order_earlier_files_first_then_by_sequence() {
        let mut names: Vec<SegmentName> = [
            "seg-00000000000000000010.nvs",
            "spool-000000000000000000000001-0000000001-000001.nvspool",
            "seg-00000000000000000002.nvs",
            "other.txt",
            "seg-x.nvs",
        ]
        .iter()
        .filter_map(|n| SegmentName::parse(n))
        .collect();
        names.sort();
        assert_eq!(names.len(), 3);
        assert!(matches!(names[0], SegmentName::Legacy(_)));
        assert_eq!(
            names[1..],
            [SegmentName::Segment(2), SegmentName::Segment(10)]
        );
        assert_eq!(names[2].file_name(), "seg-00000000000000000010.nvs");
    }
}
