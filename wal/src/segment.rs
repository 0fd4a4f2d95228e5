//! Segment files: names, the segment header, creating a segment safely, and scanning one.
//!
//! A segment is named by the LSN of its first record, in 20 decimal digits so that names sort in
//! LSN order: `00000000000000000001.wal`, `00000000000000131073.wal`. It starts with a header:
//!
//! ```text
//! offset  size  field
//!      0     8  magic       b"ARBORWAL"
//!      8     4  version     format version (1)
//!     12     4  reserved    zero
//!     16     8  segment id  random, non-zero; every record in the file repeats it
//!     24     8  first lsn   LSN of the first record (the same number as the file name)
//!     32     4  crc32       CRC-32 of bytes 0..32
//!     36     4  reserved    zero
//! ```
//!
//! Records (see `frame.rs`) follow from byte 40, back to back.

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::frame::{self, Decoded, Defect};

/// Bytes of a segment before its first record.
pub(crate) const SEGMENT_HEADER_LEN: usize = 40;
const MAGIC: &[u8; 8] = b"ARBORWAL";
const FORMAT_VERSION: u32 = 1;
const SUFFIX: &str = ".wal";
const TEMP_SUFFIX: &str = ".wal.tmp";

const _: () = assert!(SEGMENT_HEADER_LEN.is_multiple_of(frame::ALIGN));

/// The file name of the segment whose first record is `first_lsn`.
pub(crate) fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SUFFIX}")
}

/// The first LSN a segment file name stands for, or `None` if the name is not a segment's.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // LSNs start at 1 and stay far from overflow; anything else is not a segment of ours.
    digits
        .parse()
        .ok()
        .filter(|lsn| (1..u64::MAX / 2).contains(lsn))
}

/// A fresh segment id: random, never zero (zero is what unwritten space reads as).
pub(crate) fn new_segment_id(first_lsn: u64) -> u64 {
    // std's RandomState is seeded from the OS once per thread and distinct per instance, which is
    // all a segment id needs: to differ from every other segment's.
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(first_lsn);
    hasher.finish().max(1)
}

/// The fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub segment_id: u64,
    pub first_lsn: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut bytes = [0u8; SEGMENT_HEADER_LEN];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32fast::hash(&bytes[0..32]);
        bytes[32..36].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Parses and checks a header; the error says what is wrong with it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some(bytes) = bytes.first_chunk::<SEGMENT_HEADER_LEN>() else {
            return Err(format!(
                "file is {} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte segment header",
                bytes.len()
            ));
        };
        if &bytes[0..8] != MAGIC {
            return Err("bad magic: not an arbor wal segment".into());
        }
        let crc = u32::from_le_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]);
        if crc32fast::hash(&bytes[0..32]) != crc {
            return Err("segment header crc mismatch".into());
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "segment format version {version} is not supported (this build reads {FORMAT_VERSION})"
            ));
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[16..24]);
        let segment_id = u64::from_le_bytes(word);
        word.copy_from_slice(&bytes[24..32]);
        let first_lsn = u64::from_le_bytes(word);
        Ok(Self {
            segment_id,
            first_lsn,
        })
    }
}

/// Creates the segment for `header` in `dir` as the recovery rule needs it: written to a
/// temporary name, header written, size preallocated, fsynced, renamed into place, directory
/// fsynced. A crash at any point leaves either no segment or a segment with a whole header; a
/// leftover temporary file is removed by the next open. Returns the file opened for writing.
///
/// The file is preallocated (sparse) to `preallocate` bytes so that appends never change its size:
/// an fdatasync then has no size to commit, which makes it markedly cheaper on ext4. Unwritten
/// space reads as zeros, which the scan takes as the end of the records.
pub(crate) fn create(
    dir: &Path,
    header: SegmentHeader,
    preallocate: u64,
) -> Result<(PathBuf, File), Error> {
    let name = file_name(header.first_lsn);
    let path = dir.join(&name);
    let temp = dir.join(format!(".{}{TEMP_SUFFIX}", header.first_lsn));
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::io(op, p, None, source)
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io("create segment", &temp))?;
    file.write_all(&header.encode())
        .map_err(io("write segment header", &temp))?;
    file.set_len(preallocate.max(SEGMENT_HEADER_LEN as u64))
        .map_err(io("preallocate segment", &temp))?;
    file.sync_all().map_err(io("fsync new segment", &temp))?;
    fs::rename(&temp, &path).map_err(io("rename new segment", &path))?;
    sync_dir(dir)?;
    drop(file);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io("open segment for writing", &path))?;
    Ok((path, file))
}

/// Names for copies set aside beside `path`: `<path>.<suffix>`, then `<path>.<suffix>.1`, … so
/// that an earlier copy is never overwritten.
fn aside_names(path: &Path, suffix: &str) -> impl Iterator<Item = PathBuf> {
    let base = format!("{}.{suffix}", path.display());
    (0..10_000u32).map(move |n| match n {
        0 => PathBuf::from(&base),
        n => PathBuf::from(format!("{base}.{n}")),
    })
}

fn no_free_name(path: &Path) -> Error {
    Error::io(
        "set aside",
        path.to_path_buf(),
        None,
        std::io::Error::other("no free name for the copy"),
    )
}

/// Writes `bytes` to a new file beside `path` (see `aside_names`), fsyncs it and its directory,
/// and returns its path. Used to keep what recovery or repair is about to cut: the copy is durable
/// before the cut.
pub(crate) fn set_aside(path: &Path, suffix: &str, bytes: &[u8]) -> Result<PathBuf, Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    for copy_path in aside_names(path, suffix) {
        let mut copy = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&copy_path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(Error::io("set aside", copy_path, None, source)),
        };
        copy.write_all(bytes)
            .and_then(|()| copy.sync_all())
            .map_err(|source| Error::io("set aside", copy_path.clone(), None, source))?;
        sync_dir(dir)?;
        return Ok(copy_path);
    }
    Err(no_free_name(path))
}

/// Renames `path` aside (see `aside_names`) and returns the new name; the caller fsyncs the
/// directory.
pub(crate) fn rename_aside(path: &Path, suffix: &str) -> Result<PathBuf, Error> {
    let free = aside_names(path, suffix).find(|candidate| !candidate.exists());
    let target = free.ok_or_else(|| no_free_name(path))?;
    fs::rename(path, &target)
        .map_err(|source| Error::io("set aside", path.to_path_buf(), None, source))?;
    Ok(target)
}

/// Fsyncs a directory, so that creations, renames and removals in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::io("fsync directory", dir.to_path_buf(), None, source))
}

/// The segment files in `dir`, sorted by first LSN; also removes temporary files that a crash
/// during segment creation left behind when `remove_temporaries` is set.
pub(crate) fn list(dir: &Path, remove_temporaries: bool) -> Result<Vec<(u64, PathBuf)>, Error> {
    let entries = fs::read_dir(dir)
        .map_err(|source| Error::io("list directory", dir.to_path_buf(), None, source))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|source| Error::io("list directory", dir.to_path_buf(), None, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_lsn) = parse_file_name(name) {
            segments.push((first_lsn, entry.path()));
        } else if remove_temporaries && name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
            fs::remove_file(entry.path()).map_err(|source| {
                Error::io("remove temporary segment", entry.path(), None, source)
            })?;
        }
    }
    segments.sort_unstable_by_key(|(lsn, _)| *lsn);
    Ok(segments)
}

/// How a scanned segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Every byte after the header belongs to a valid record, or is zero (preallocated space
    /// that was never written).
    Clean,
    /// The record at `offset` is bad and nothing valid follows: a torn write (recoverable in the
    /// last segment by truncating at `offset`).
    Torn { offset: u64, defect: Defect },
    /// The record at `offset` is bad and valid records follow it: corruption.
    Corrupt { offset: u64, defect: Defect },
}

/// What a scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    pub header: SegmentHeader,
    /// Number of valid records, from `header.first_lsn` on.
    pub records: u64,
    /// Offset just after the last valid record.
    pub valid_end: u64,
    pub ending: Ending,
    /// Where some records start, one per [`INDEX_EVERY`] bytes: `(lsn, offset)`.
    pub index: Vec<(u64, u64)>,
}

/// A reader seeking an LSN starts at the nearest indexed record at or before it, so it scans at
/// most this many bytes of records it does not want (recovery from a checkpoint deep into a
/// segment then costs the tail, not the segment).
pub(crate) const INDEX_EVERY: u64 = 64 << 10;

impl Scan {
    /// LSN of the last valid record, or `first_lsn - 1` when there is none.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.header.first_lsn + self.records - 1
    }
}

/// Scans the bytes of a whole segment file. `expected_first_lsn` comes from the file name.
pub(crate) fn scan(
    bytes: &[u8],
    expected_first_lsn: u64,
    max_record: usize,
) -> Result<Scan, String> {
    let header = SegmentHeader::decode(bytes)?;
    if header.first_lsn != expected_first_lsn {
        return Err(format!(
            "header says first lsn {} but the file name says {expected_first_lsn}",
            header.first_lsn
        ));
    }
    let mut offset = SEGMENT_HEADER_LEN;
    let mut next_lsn = header.first_lsn;
    let mut index = Vec::new();
    let mut index_at = 0;
    loop {
        if offset == bytes.len() {
            return Ok(Scan {
                header,
                records: next_lsn - header.first_lsn,
                valid_end: offset as u64,
                ending: Ending::Clean,
                index,
            });
        }
        match frame::decode(&bytes[offset..], header.segment_id, next_lsn, max_record) {
            Decoded::Record { frame_len, .. } => {
                if offset as u64 >= index_at {
                    index.push((next_lsn, offset as u64));
                    index_at = offset as u64 + INDEX_EVERY;
                }
                offset += frame_len;
                next_lsn += 1;
            }
            Decoded::Bad(_) if bytes[offset..].iter().all(|&b| b == 0) => {
                return Ok(Scan {
                    header,
                    records: next_lsn - header.first_lsn,
                    valid_end: offset as u64,
                    ending: Ending::Clean,
                    index,
                });
            }
            Decoded::Bad(defect) => {
                let valid_follows = (offset + frame::ALIGN..bytes.len())
                    .step_by(frame::ALIGN)
                    .any(|at| {
                        frame::is_valid_frame_at(
                            &bytes[at..],
                            header.segment_id,
                            next_lsn,
                            max_record,
                        )
                    });
                let at = offset as u64;
                return Ok(Scan {
                    header,
                    records: next_lsn - header.first_lsn,
                    valid_end: at,
                    ending: if valid_follows {
                        Ending::Corrupt { offset: at, defect }
                    } else {
                        Ending::Torn { offset: at, defect }
                    },
                    index,
                });
            }
        }
    }
}
