//! The spool's replay reader: a blocking task that streams sealed segments,
//! oldest first, into chunks of rows for the writer, in bounded memory.
//!
//! Each segment is read with [`RecordReader`] (one record at a time), its
//! records decoded into [`FlowRow`]s and sent in chunks of at most
//! `chunk_rows` rows over a channel of one: the reader holds one chunk while
//! the writer stores another, whatever the spool's size. The last chunk of a
//! segment says so; the writer removes the segment once that chunk is stored.
//!
//! What cannot be replayed goes to the spool's `quarantine/` directory, one
//! file per segment (`<segment>.corrupt`), fsynced before the segment's last
//! chunk is sent, so nothing acknowledged is lost without a trace: bytes that
//! form no valid record (a corrupt record; the records after it are kept)
//! and records whose payload is no storable flow.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use netverdict_proto::v1 as pb;
use netverdict_proto::validate::check_storable;
use prost::Message;
use tokio::sync::mpsc;

use super::row::FlowRow;
use super::spool::{Item, RecordReader, Segment, is_legacy};
use super::stats::ClickHouseStats;

/// Rows of one segment for the writer to store.
pub(crate) struct ReplayChunk {
    /// The segment they come from.
    pub segment: Segment,
    /// The rows.
    pub rows: Vec<FlowRow>,
    /// Records of the segment this chunk accounts for (rows and records
    /// quarantined since the previous chunk).
    pub records: u64,
    /// The segment's last chunk: once stored, the segment can go.
    pub last: bool,
}

/// Starts reading `segments` in a blocking task; the chunks come out of the
/// receiver, which ends when every segment is read (or stops the reader
/// when dropped).
pub(crate) fn start(
    segments: Vec<Segment>,
    quarantine: PathBuf,
    chunk_rows: usize,
    stats: Arc<ClickHouseStats>,
) -> mpsc::Receiver<ReplayChunk> {
    let (tx, rx) = mpsc::channel(1);
    tokio::task::spawn_blocking(move || {
        for segment in segments {
            match read_segment(&segment, &quarantine, chunk_rows.max(1), &stats, &tx) {
                Ok(true) => {}
                Ok(false) => return, // the writer stopped this replay
                Err(e) => {
                    tracing::error!(segment = %segment.path.display(), error = %e, "cannot replay a spool segment; it stays");
                    return;
                }
            }
        }
    });
    rx
}

/// Where the unreadable parts of a segment go, opened on first use.
struct Quarantine<'a> {
    dir: &'a Path,
    segment: &'a Segment,
    file: Option<File>,
}

impl Quarantine<'_> {
    fn write(&mut self, what: &str, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            std::fs::create_dir_all(self.dir)?;
            let name = self
                .segment
                .path
                .file_name()
                .map_or_else(|| "segment".into(), |n| n.to_string_lossy().into_owned());
            let path = self.dir.join(format!("{name}.corrupt"));
            tracing::warn!(segment = %self.segment.path.display(), quarantine = %path.display(), "quarantining unreadable spool data");
            // Created afresh by each pass over the segment: a pass cut
            // short and read again writes the same pieces once.
            self.file = Some(File::create(path)?);
        }
        let Some(file) = self.file.as_mut() else {
            unreachable!("opened above")
        };
        // A small header per piece, so a person can tell them apart.
        writeln!(file, "--- {what} at offset {offset}, {} bytes", bytes.len())?;
        file.write_all(bytes)?;
        writeln!(file)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        match &self.file {
            Some(f) => f.sync_all(),
            None => Ok(()),
        }
    }
}

/// Reads one segment into chunks; false when the writer went away.
fn read_segment(
    segment: &Segment,
    quarantine_dir: &Path,
    chunk_rows: usize,
    stats: &ClickHouseStats,
    tx: &mpsc::Sender<ReplayChunk>,
) -> std::io::Result<bool> {
    let file = File::open(&segment.path)?;
    let mut quarantine = Quarantine {
        dir: quarantine_dir,
        segment,
        file: None,
    };
    let mut rows = Vec::new();
    let mut records = 0u64;
    let mut corrupt_end = None;
    for item in RecordReader::new(file, is_legacy(segment)) {
        match item? {
            Item::Record { offset, payload } => {
                records += 1;
                match decode(&payload) {
                    Ok(row) => rows.push(row),
                    Err(e) => {
                        stats.spool_bad_records.fetch_add(1, Relaxed);
                        tracing::error!(segment = %segment.path.display(), offset, error = %e, "spool record is no storable flow; quarantined");
                        quarantine.write(&format!("record ({e})"), offset, &payload)?;
                    }
                }
                if rows.len() >= chunk_rows {
                    let chunk = ReplayChunk {
                        segment: segment.clone(),
                        rows: std::mem::take(&mut rows),
                        records: std::mem::take(&mut records),
                        last: false,
                    };
                    if tx.blocking_send(chunk).is_err() {
                        return Ok(false);
                    }
                }
            }
            Item::Corrupt { offset, bytes } => {
                if corrupt_end != Some(offset) {
                    tracing::error!(segment = %segment.path.display(), offset, "corrupt spool record; the records after it are kept");
                }
                corrupt_end = Some(offset + bytes.len() as u64);
                stats
                    .spool_corrupt_bytes
                    .fetch_add(bytes.len() as u64, Relaxed);
                quarantine.write("corrupt bytes", offset, &bytes)?;
            }
            Item::Torn { offset, len } => {
                tracing::warn!(segment = %segment.path.display(), offset, bytes = len, "spool segment ends in a partial record (never acknowledged)");
            }
        }
    }
    quarantine.sync()?;
    let chunk = ReplayChunk {
        segment: segment.clone(),
        rows,
        records,
        last: true,
    };
    Ok(tx.blocking_send(chunk).is_ok())
}

fn decode(payload: &[u8]) -> Result<FlowRow, String> {
    let flow = pb::Flow::decode(payload).map_err(|e| e.to_string())?;
    check_storable(&flow).map_err(|e| e.to_string())?;
    FlowRow::from_owned(flow).map_err(|e| e.to_string())
}
