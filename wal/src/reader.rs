//! Reading records back, from any LSN, across segments, while appends continue.
//!
//! A reader opens segment files with its own descriptors and never reads past the `written`
//! watermark, so it sees only whole records even while the flusher is writing: bytes up to the
//! watermark never change once written. Records appended but not yet written are waited for. A segment released by `truncate_before` while a reader
//! has it open stays readable through the open descriptor.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::frame::{self, Defect, HEADER_LEN, Header};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::writer::{SegmentEntry, Shared};
use crate::{Error, Lsn, Result};

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its log sequence number.
    pub lsn: Lsn,
    /// The bytes that were appended.
    pub payload: Vec<u8>,
}

/// An iterator over records from some LSN on, in LSN order. It ends at the last record appended
/// when `next` is called (waiting, if need be, for the flusher to write records already appended,
/// so a caller reads its own writes); calling `next` again later picks up records appended since.
pub struct Reader {
    shared: Arc<Shared>,
    next_lsn: Lsn,
    current: Option<OpenSegment>,
}

struct OpenSegment {
    entry: SegmentEntry,
    file: File,
    /// Offset of the next frame.
    offset: u64,
    /// LSN of the next record in the file.
    next_lsn: Lsn,
    /// Read-ahead: bytes of the file from `buffer_offset` on.
    buffer: Vec<u8>,
    buffer_offset: u64,
    /// The file's size when it was opened (preallocated, so it does not grow while written).
    file_len: u64,
}

/// How far ahead a reader reads (never past what the log has written: preallocated space reads
/// as zeros until records are written there, and a buffered zero must not outlive that).
const READ_AHEAD: usize = 256 << 10;

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn) -> Result<Self> {
        let oldest = shared.segments.read().first().map_or(1, |s| s.first_lsn);
        if from < oldest {
            return Err(Error::Truncated {
                requested: from,
                oldest,
            });
        }
        Ok(Self {
            shared,
            next_lsn: from,
            current: None,
        })
    }

    /// The LSN of the record the next call to `next` returns.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    fn read_next(&mut self) -> Result<Option<Record>> {
        if self.next_lsn > self.shared.written_lsn() {
            // Read your writes: a record already appended is waited for (the flusher writes it
            // within moments); beyond the last appended record the iteration ends for now.
            if self.next_lsn > self.shared.last_lsn() {
                return Ok(None);
            }
            self.shared
                .wait_blocking(self.next_lsn, Shared::written_lsn)?;
        }
        loop {
            // The segment that holds `next_lsn` is the newest one starting at or before it.
            let (holder, oldest) = {
                let segments = self.shared.segments.read();
                let holder = segments
                    .iter()
                    .rev()
                    .find(|s| s.first_lsn <= self.next_lsn)
                    .cloned();
                (holder, segments.first().map_or(1, |s| s.first_lsn))
            };
            let truncated = Error::Truncated {
                requested: self.next_lsn,
                oldest,
            };
            match (&self.current, holder) {
                (Some(open), Some(holder)) if open.entry.first_lsn == holder.first_lsn => {}
                // Our segment was released while we read it; the open descriptor still reads it,
                // and the end of its file tells whether it holds `next_lsn`.
                (Some(_), None) => {}
                (_, Some(holder)) => match open_segment(holder) {
                    Ok(open) => self.current = Some(open),
                    // Released by `truncate_before` between the lookup and the open.
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        let oldest = self
                            .shared
                            .segments
                            .read()
                            .first()
                            .map_or(1, |s| s.first_lsn);
                        return Err(Error::Truncated {
                            requested: self.next_lsn,
                            oldest,
                        });
                    }
                    Err(error) => return Err(error),
                },
                (None, None) => return Err(truncated),
            }
            let Some(open) = self.current.as_mut() else {
                return Err(truncated);
            };
            // Skip ahead to the nearest indexed record at or before the one wanted.
            if open.next_lsn < self.next_lsn
                && let Some(entry) = self
                    .shared
                    .nearest_indexed(open.entry.first_lsn, self.next_lsn)
                && entry.lsn > open.next_lsn
            {
                open.offset = entry.offset;
                open.next_lsn = entry.lsn;
            }
            let (writing_segment, written_end) = self.shared.written_end();
            let limit = if writing_segment == open.entry.first_lsn {
                written_end
            } else {
                u64::MAX
            };
            let Some(record) = open.read_record(frame::FORMAT_MAX_RECORD, limit)? else {
                // A clean end of file before `next_lsn`: the segment that held it was released.
                // (A listed segment cannot end early: the watermark says the record was written.)
                if open.entry.first_lsn < oldest {
                    return Err(truncated);
                }
                return Err(Error::Corrupt {
                    segment: open.entry.path.clone(),
                    offset: open.offset,
                    defect: Defect::Incomplete,
                });
            };
            if record.lsn == self.next_lsn {
                self.next_lsn += 1;
                return Ok(Some(record));
            }
            debug_assert!(record.lsn < self.next_lsn, "records are read in order");
        }
    }
}

fn open_segment(entry: SegmentEntry) -> Result<OpenSegment> {
    let io = |op, offset| {
        let path = entry.path.clone();
        move |source| Error::io(op, path, offset, source)
    };
    let file = File::open(&entry.path).map_err(io("open segment for reading", None))?;
    let file_len = file.metadata().map_err(io("stat segment", None))?.len();
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut header, 0)
        .map_err(io("read segment header", Some(0)))?;
    let header = SegmentHeader::decode(&header).map_err(|reason| Error::BadSegment {
        segment: entry.path.clone(),
        reason,
    })?;
    debug_assert_eq!(header.segment_id, entry.segment_id);
    Ok(OpenSegment {
        next_lsn: entry.first_lsn,
        entry,
        file,
        offset: SEGMENT_HEADER_LEN as u64,
        buffer: Vec::new(),
        buffer_offset: 0,
        file_len,
    })
}

impl OpenSegment {
    /// `len` bytes of the file at `at`, reading ahead up to `limit`; `None` if the file ends
    /// first.
    fn bytes_at(&mut self, at: u64, len: usize, limit: u64) -> std::io::Result<Option<&[u8]>> {
        let buffered_end = self.buffer_offset + self.buffer.len() as u64;
        if at < self.buffer_offset || at + len as u64 > buffered_end {
            let ahead = limit.saturating_sub(at).min(READ_AHEAD as u64) as usize;
            self.buffer.resize(len.max(ahead), 0);
            self.buffer_offset = at;
            let mut filled = 0;
            while filled < self.buffer.len() {
                match self
                    .file
                    .read_at(&mut self.buffer[filled..], at + filled as u64)
                {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            self.buffer.truncate(filled);
            if filled < len {
                return Ok(None);
            }
        }
        let start = (at - self.buffer_offset) as usize;
        Ok(Some(&self.buffer[start..start + len]))
    }

    /// The next record of the file, or `None` at the end of its records (end of file, or the
    /// zeros of preallocated space). `limit` is where the log's written bytes end in this file.
    fn read_record(&mut self, max_record: usize, limit: u64) -> Result<Option<Record>> {
        let offset = self.offset;
        let path = self.entry.path.clone();
        let corrupt = |defect| Error::Corrupt {
            segment: path.clone(),
            offset,
            defect,
        };
        let read_error = |source| Error::io("read record", path.clone(), Some(offset), source);
        let Some(header_bytes) = self
            .bytes_at(offset, HEADER_LEN, limit)
            .map_err(read_error)?
        else {
            return Ok(None);
        };
        let mut header_copy = [0u8; HEADER_LEN];
        header_copy.copy_from_slice(header_bytes);
        let header_bytes = header_copy;
        let header = Header::parse(&header_bytes);
        if header.is_zero() {
            // Preallocated space that was never written: the end of this segment's records.
            return Ok(None);
        }
        let frame_len = frame::frame_len(header.len as usize);
        // A length that runs past the written bytes (or the file) is damage; checked before the
        // read so that a garbage length never asks for gigabytes of buffer.
        if offset + frame_len as u64 > limit.min(self.file_len) {
            return Err(corrupt(if header.len as usize > max_record {
                Defect::OversizedLength { len: header.len }
            } else {
                Defect::Incomplete
            }));
        }
        let Some(frame) = self
            .bytes_at(offset, frame_len, limit)
            .map_err(read_error)?
        else {
            // The watermark said this record was written: a short file means damage.
            return Err(corrupt(Defect::Incomplete));
        };
        let payload = frame[HEADER_LEN..HEADER_LEN + header.len as usize].to_vec();
        if Header::expected_crc(&header_bytes, &payload) != header.crc {
            return Err(corrupt(Defect::ChecksumMismatch));
        }
        if header.segment_id != self.entry.segment_id {
            return Err(corrupt(Defect::ForeignSegment {
                found: header.segment_id,
            }));
        }
        if header.lsn != self.next_lsn {
            return Err(corrupt(Defect::LsnOutOfOrder {
                expected: self.next_lsn,
                found: header.lsn,
            }));
        }
        self.offset += frame_len as u64;
        self.next_lsn += 1;
        Ok(Some(Record {
            lsn: header.lsn,
            payload,
        }))
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("next_lsn", &self.next_lsn)
            .field("segment", &self.current.as_ref().map(|s| &s.entry.path))
            .finish()
    }
}

impl Iterator for Reader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read_next().transpose()
    }
}
