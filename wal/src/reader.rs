//! Reading records back, from any LSN, across segments, while appends continue.
//!
//! A reader opens segment files with its own descriptors and never reads past the `written`
//! watermark, so it sees only whole records even while the flusher is writing: bytes up to the
//! watermark never change once written. Records appended but not yet written are waited for. A segment released by `truncate_before` while a reader
//! has it open stays readable through the open descriptor.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
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
    file: BufReader<File>,
    offset: u64,
    /// LSN of the next record in the file.
    next_lsn: Lsn,
}

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
                (_, Some(holder)) => self.current = Some(open_segment(holder)?),
                (None, None) => return Err(truncated),
            }
            let Some(open) = self.current.as_mut() else {
                return Err(truncated);
            };
            let Some(record) = open.read_record(self.shared.config.max_record_bytes)? else {
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
    let mut file = BufReader::with_capacity(64 << 10, file);
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact(&mut header)
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
    })
}

impl OpenSegment {
    /// The next record of the file, or `None` at a clean end of file (no byte of a next frame).
    fn read_record(&mut self, max_record: usize) -> Result<Option<Record>> {
        let corrupt = |offset, defect| Error::Corrupt {
            segment: self.entry.path.clone(),
            offset,
            defect,
        };
        let at_end = self
            .file
            .fill_buf()
            .map_err(|source| {
                Error::io(
                    "read record",
                    self.entry.path.clone(),
                    Some(self.offset),
                    source,
                )
            })?
            .is_empty();
        if at_end {
            return Ok(None);
        }
        let mut header_bytes = [0u8; HEADER_LEN];
        if let Err(source) = self.file.read_exact(&mut header_bytes) {
            return Err(match source.kind() {
                // The watermark said this record was written: a short file means damage.
                std::io::ErrorKind::UnexpectedEof => corrupt(self.offset, Defect::Incomplete),
                _ => Error::io(
                    "read record",
                    self.entry.path.clone(),
                    Some(self.offset),
                    source,
                ),
            });
        }
        let header = Header::parse(&header_bytes);
        if header.len as usize > max_record {
            return Err(corrupt(
                self.offset,
                Defect::OversizedLength { len: header.len },
            ));
        }
        let frame_len = frame::frame_len(header.len as usize);
        let mut rest = vec![0u8; frame_len - HEADER_LEN];
        if let Err(source) = self.file.read_exact(&mut rest) {
            return Err(match source.kind() {
                std::io::ErrorKind::UnexpectedEof => corrupt(self.offset, Defect::Incomplete),
                _ => Error::io(
                    "read record",
                    self.entry.path.clone(),
                    Some(self.offset),
                    source,
                ),
            });
        }
        rest.truncate(header.len as usize);
        let payload = rest;
        if Header::expected_crc(&header_bytes, &payload) != header.crc {
            return Err(corrupt(self.offset, Defect::ChecksumMismatch));
        }
        if header.segment_id != self.entry.segment_id {
            return Err(corrupt(
                self.offset,
                Defect::ForeignSegment {
                    found: header.segment_id,
                },
            ));
        }
        if header.lsn != self.next_lsn {
            return Err(corrupt(
                self.offset,
                Defect::LsnOutOfOrder {
                    expected: self.next_lsn,
                    found: header.lsn,
                },
            ));
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
