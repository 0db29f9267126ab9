//! The spool, source of truth for resending: every output chunk is appended here before it is
//! queued for sending, read back when it must be (re)sent but is no longer held in memory, and
//! deleted a segment at a time once the orchestrator has acknowledged all of it.
//!
//! The spool of one run is the directory `<spool-dir>/agent_logs/<agent-id>.spool/`. Each segment
//! file is named after its first sequence number (`00000000000000000042.seg`) and holds records
//! `[seq u64][stream u8][len u32][data]` (little-endian) in sequence order.

use std::io::{self, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use covibe_proto::common::v1::OutputStream;
use covibe_proto::vmagent::v1::Output;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncSeekExt as _, BufReader};

use crate::Error;

const HEADER_BYTES: usize = 13;
const SEGMENT_SUFFIX: &str = ".seg";
const READ_BUFFER: usize = 256 * 1024;

/// Where a chunk went: the first sequence number of its segment and the record's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spooled {
    pub(crate) segment: u64,
    pub(crate) bytes: u64,
}

/// The spool directory of one run.
#[derive(Debug, Clone)]
pub(crate) struct SpoolDir {
    path: PathBuf,
}

impl SpoolDir {
    pub(crate) fn new(spool_dir: &Path, agent_id: &str) -> Self {
        Self {
            path: spool_dir
                .join("agent_logs")
                .join(format!("{agent_id}.spool")),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory empty, discarding what an earlier run with this agent id left (a
    /// restarted vm-agent starts a new run; it does not recover the old one).
    pub(crate) async fn create(&self, segment_bytes: u64) -> Result<SpoolWriter, Error> {
        let spool_error = |source| Error::Spool {
            path: self.path.clone(),
            source,
        };
        if tokio::fs::try_exists(&self.path).await.unwrap_or(false) {
            tracing::warn!(path = %self.path.display(), "discarding the spool of an earlier run");
            tokio::fs::remove_dir_all(&self.path)
                .await
                .map_err(spool_error)?;
        }
        tokio::fs::create_dir_all(&self.path)
            .await
            .map_err(spool_error)?;
        Ok(SpoolWriter {
            dir: self.clone(),
            segment_bytes,
            current: None,
            buf: Vec::new(),
        })
    }

    pub(crate) fn reader(&self) -> SpoolReader {
        SpoolReader {
            dir: self.clone(),
            open: None,
        }
    }

    /// Deletes fully acknowledged segments.
    pub(crate) async fn discard(&self, segments: &[u64]) {
        for &first_seq in segments {
            let path = self.segment_path(first_seq);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => tracing::debug!(first_seq, "acknowledged spool segment deleted"),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "deleting a spool segment failed")
                }
            }
        }
    }

    /// Deletes the whole spool: everything in it is acknowledged, or nobody wants it.
    pub(crate) async fn remove(&self) {
        if let Err(err) = tokio::fs::remove_dir_all(&self.path).await
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %err, "deleting the spool failed");
        }
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.path.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
    }

    /// The first sequence numbers of the segments on disk.
    async fn segments(&self) -> io::Result<Vec<u64>> {
        let mut entries = tokio::fs::read_dir(&self.path).await?;
        let mut segments = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            if let Some(first_seq) = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|digits| digits.parse().ok())
            {
                segments.push(first_seq);
            }
        }
        Ok(segments)
    }
}

/// The segment being written.
#[derive(Debug)]
struct Segment {
    first_seq: u64,
    file: Arc<std::fs::File>,
    /// Bytes written to the file.
    written: u64,
}

/// Appends records; a new segment starts once the current one reaches `segment_bytes`.
///
/// Every method either succeeds or changes nothing that matters, so a failed call (disk full,
/// say) can simply be retried.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    dir: SpoolDir,
    segment_bytes: u64,
    current: Option<Segment>,
    /// Records appended but not yet written to the current segment.
    buf: Vec<u8>,
}

impl SpoolWriter {
    /// Appends one record; it reaches the file at the next [`SpoolWriter::flush`].
    pub(crate) async fn append(
        &mut self,
        seq: u64,
        stream: OutputStream,
        data: &[u8],
    ) -> io::Result<Spooled> {
        let full = |segment: &Segment| {
            segment.written + self.buf.len() as u64 >= self.segment_bytes && segment.first_seq < seq
        };
        if self.current.as_ref().is_none_or(full) {
            self.flush().await?;
            let path = self.dir.segment_path(seq);
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .await?
                .into_std()
                .await;
            tracing::debug!(first_seq = seq, "new spool segment");
            self.current = Some(Segment {
                first_seq: seq,
                file: Arc::new(file),
                written: 0,
            });
        }
        let len = u32::try_from(data.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let stream = u8::try_from(i32::from(stream)).unwrap_or_default();
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.push(stream);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(data);
        Ok(Spooled {
            segment: self.current.as_ref().map_or(seq, |s| s.first_seq),
            bytes: (HEADER_BYTES + data.len()) as u64,
        })
    }

    /// Writes the appended records to the current segment (to the OS, not synced: the spool
    /// outlives a lost connection, not a crash of the VM).
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        let Some(segment) = &mut self.current else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = segment.file.clone();
        let offset = segment.written;
        let buf = std::mem::take(&mut self.buf);
        // The write cannot panic, so the task fails only when the runtime shuts down.
        let (buf, written) = tokio::task::spawn_blocking(move || {
            let written = file.write_all_at(&buf, offset);
            (buf, written)
        })
        .await
        .map_err(io::Error::other)?;
        // On failure the same bytes are written at the same offset again by the next call.
        self.buf = buf;
        written?;
        segment.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Reads records back, cheaply when sequence numbers are read in order.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    dir: SpoolDir,
    /// The open segment and the sequence number of its next record.
    open: Option<(BufReader<tokio::fs::File>, u64)>,
}

impl SpoolReader {
    /// Reads the chunk `seq`, which must have been appended and flushed.
    pub(crate) async fn read(&mut self, seq: u64) -> io::Result<Output> {
        if self.open.as_ref().is_none_or(|(_, next)| *next != seq) {
            self.open = None;
            self.seek(seq).await?;
        }
        let Some((reader, next)) = &mut self.open else {
            return Err(missing(seq));
        };
        let output = match read_record(reader, seq).await? {
            Some(output) => output,
            // The segment ended: the record starts the next one.
            None => {
                let mut reader = open_segment(&self.dir, seq).await?;
                let output = read_record(&mut reader, seq).await?.ok_or(missing(seq))?;
                self.open = Some((reader, seq + 1));
                return Ok(output);
            }
        };
        *next = seq + 1;
        Ok(output)
    }

    /// Opens the segment holding `seq` positioned at its record.
    async fn seek(&mut self, seq: u64) -> io::Result<()> {
        let first_seq = self
            .dir
            .segments()
            .await?
            .into_iter()
            .filter(|first| *first <= seq)
            .max()
            .ok_or(missing(seq))?;
        let mut reader = open_segment(&self.dir, first_seq).await?;
        for expected in first_seq..seq {
            let header = read_header(&mut reader, expected)
                .await?
                .ok_or(missing(seq))?;
            reader.seek(SeekFrom::Current(header.len.into())).await?;
        }
        self.open = Some((reader, seq));
        Ok(())
    }
}

async fn open_segment(dir: &SpoolDir, first_seq: u64) -> io::Result<BufReader<tokio::fs::File>> {
    let file = tokio::fs::File::open(dir.segment_path(first_seq)).await?;
    Ok(BufReader::with_capacity(READ_BUFFER, file))
}

struct Header {
    stream: i32,
    len: u32,
}

/// The header of record `seq`, or `None` at the end of the segment.
async fn read_header(
    reader: &mut BufReader<tokio::fs::File>,
    seq: u64,
) -> io::Result<Option<Header>> {
    if reader.fill_buf().await?.is_empty() {
        return Ok(None);
    }
    let mut header = [0; HEADER_BYTES];
    reader.read_exact(&mut header).await?;
    let [s0, s1, s2, s3, s4, s5, s6, s7, stream, l0, l1, l2, l3] = header;
    let found = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
    if found != seq {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("spool record {found} found where {seq} was expected"),
        ));
    }
    Ok(Some(Header {
        stream: stream.into(),
        len: u32::from_le_bytes([l0, l1, l2, l3]),
    }))
}

async fn read_record(
    reader: &mut BufReader<tokio::fs::File>,
    seq: u64,
) -> io::Result<Option<Output>> {
    let Some(header) = read_header(reader, seq).await? else {
        return Ok(None);
    };
    let mut data = vec![0; header.len as usize];
    reader.read_exact(&mut data).await?;
    Ok(Some(Output {
        seq,
        stream: header.stream,
        data: Bytes::from(data),
    }))
}

fn missing(seq: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("spool record {seq} is missing"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_across_segments_and_acked_segments_go() {
        let tmp = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let dir = SpoolDir::new(tmp.path(), "a1");
        std::fs::create_dir_all(dir.path()).unwrap_or_else(|err| panic!("{err}"));
        std::fs::write(dir.path().join("stale.seg"), b"x").unwrap_or_else(|err| panic!("{err}"));
        let mut writer = dir.create(100).await.unwrap_or_else(|err| panic!("{err}"));
        assert!(!dir.path().join("stale.seg").exists());

        let data = |seq: u64| vec![b'a' + (seq % 26) as u8; (seq * 7 % 40) as usize];
        let mut segments = Vec::new();
        for seq in 0..30 {
            let stream = if seq % 3 == 0 {
                OutputStream::Stderr
            } else {
                OutputStream::Stdout
            };
            let spooled = writer.append(seq, stream, &data(seq)).await;
            let spooled = spooled.unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(spooled.bytes, 13 + data(seq).len() as u64);
            if segments.last() != Some(&spooled.segment) {
                segments.push(spooled.segment);
            }
            if seq % 4 == 0 {
                writer.flush().await.unwrap_or_else(|err| panic!("{err}"));
            }
        }
        writer.flush().await.unwrap_or_else(|err| panic!("{err}"));
        assert!(segments.len() > 3, "{segments:?}");
        let mut on_disk = dir.segments().await.unwrap_or_else(|err| panic!("{err}"));
        on_disk.sort_unstable();
        assert_eq!(on_disk, segments);

        let mut reader = dir.reader();
        // In order, then jumping back and forth.
        for seq in (0..30).chain([17, 3, 29, 0, 1]) {
            let output = reader.read(seq).await.unwrap_or_else(|err| panic!("{err}"));
            assert_eq!((output.seq, output.data.to_vec()), (seq, data(seq)));
            let stream = if seq % 3 == 0 { 2 } else { 1 };
            assert_eq!(output.stream, stream);
        }
        assert!(reader.read(30).await.is_err());

        dir.discard(&segments[..2]).await;
        assert!(reader.read(0).await.is_err());
        let kept = segments[2];
        assert_eq!(reader.read(kept).await.map(|o| o.seq).ok(), Some(kept));
        dir.remove().await;
        assert!(!dir.path().exists());
    }
}
