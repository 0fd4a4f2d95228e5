//! Opening a log is recovering it, and `verify` is the same scan without changing anything.
//!
//! The recovery rule, one row per case, is [`decide`]; `decision_table_covers_every_case` checks
//! that every (position, ending) pair matches exactly one row:
//!
//! | segment  | how its records end          | open does                                       |
//! |----------|------------------------------|-------------------------------------------------|
//! | earlier  | clean                        | keep                                            |
//! | earlier  | bad record, nothing follows  | refuse: `Corrupt` (only the last may be torn)   |
//! | earlier  | bad record, valid ones follow| refuse: `Corrupt`                               |
//! | last     | clean                        | keep; appends continue after the last record    |
//! | last     | bad record, nothing follows  | torn tail: copy the cut bytes aside, truncate,  |
//! |          |                              | fdatasync; appends continue                     |
//! | last     | bad record, valid ones follow| refuse: `Corrupt`                               |
//!
//! Besides records: a segment whose header is bad, whose header disagrees with its name, or that
//! does not start right after the previous segment's last record is refused (`BadSegment`).
//! `repair` is the explicit way past a refusal.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::frame;
use crate::segment::{self, Ending, SEGMENT_HEADER_LEN, Scan, SegmentHeader};
use crate::writer::{IndexEntry, SegmentEntry, Start};
use crate::{Config, Error, Lsn, Result};

/// Where a segment is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Earlier,
    Last,
}

/// What open does with a scanned segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Keep,
    TruncateTornTail { offset: u64 },
    Refuse { offset: u64, defect: crate::Defect },
}

/// The recovery rule (see the table in the module docs).
pub(crate) fn decide(position: Position, ending: Ending) -> Action {
    match (position, ending) {
        (_, Ending::Clean) => Action::Keep,
        (Position::Last, Ending::Torn { offset, .. }) => Action::TruncateTornTail { offset },
        (Position::Earlier, Ending::Torn { offset, defect }) => Action::Refuse { offset, defect },
        (_, Ending::Corrupt { offset, defect }) => Action::Refuse { offset, defect },
    }
}

/// What recovery did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Number of segments found.
    pub segments: usize,
    /// Records found, from the oldest kept LSN on.
    pub records: u64,
    /// The torn tail that was cut from the last segment, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// A torn tail cut from the last segment at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was truncated.
    pub segment: PathBuf,
    /// Where it was cut (the start of the first bad record).
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// The file holding a copy of the cut bytes.
    pub saved_to: PathBuf,
}

pub(crate) fn read_segment(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::io("read segment", path.to_path_buf(), None, source))
}

pub(crate) fn scan_segment(path: &Path, bytes: &[u8], first_lsn: Lsn) -> Result<Scan> {
    segment::scan(bytes, first_lsn, frame::FORMAT_MAX_RECORD).map_err(|reason| Error::BadSegment {
        segment: path.to_path_buf(),
        reason,
    })
}

/// Checks that `scan` starts right after `previous_last_lsn`.
pub(crate) fn check_continuity(
    path: &Path,
    scan: &Scan,
    previous_last_lsn: Option<Lsn>,
) -> Result<()> {
    match previous_last_lsn {
        Some(previous) if scan.header.first_lsn != previous + 1 => Err(Error::BadSegment {
            segment: path.to_path_buf(),
            reason: format!(
                "segment starts at lsn {} but the previous segment ends at lsn {previous}",
                scan.header.first_lsn
            ),
        }),
        _ => Ok(()),
    }
}

/// Takes the directory's lock file, so that one log at a time writes to a directory.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::io("open lock file", path.clone(), None, source))?;
    // flock belongs to the open file description, which a child forked by any thread of this
    // process shares until its exec closes it (close-on-exec). A log closed and reopened while the
    // host spawns a process can therefore see its own lock for a moment: retry briefly before
    // concluding another log holds the directory.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(Error::io("lock", path, None, source));
            }
        }
    }
}

/// Opens (and recovers) the log in `dir`: the state the writer starts from, and what recovery did.
pub(crate) fn open(dir: &Path, config: &Config) -> Result<(Start, Recovery)> {
    fs::create_dir_all(dir)
        .map_err(|source| Error::io("create directory", dir.to_path_buf(), None, source))?;
    let lock_file = lock_dir(dir)?;
    let found = segment::list(dir, true)?;
    let mut recovery = Recovery {
        segments: found.len(),
        ..Recovery::default()
    };
    if found.is_empty() {
        let header = SegmentHeader {
            segment_id: segment::new_segment_id(1),
            first_lsn: 1,
        };
        let (path, file) = segment::create(dir, header, config.segment_bytes)?;
        let start = Start {
            dir: dir.to_path_buf(),
            next_lsn: 1,
            segment: header,
            segment_len: SEGMENT_HEADER_LEN as u64,
            file,
            segments: vec![SegmentEntry {
                first_lsn: 1,
                segment_id: header.segment_id,
                path,
            }],
            index: Vec::new(),
            lock_file,
        };
        recovery.segments = 1;
        return Ok((start, recovery));
    }

    let mut segments = Vec::with_capacity(found.len());
    let mut sparse_index = Vec::new();
    let mut previous_last_lsn = None;
    let mut last_scan = None;
    for (index, (first_lsn, path)) in found.iter().enumerate() {
        let bytes = read_segment(path)?;
        let scan = scan_segment(path, &bytes, *first_lsn)?;
        check_continuity(path, &scan, previous_last_lsn)?;
        let position = if index + 1 == found.len() {
            Position::Last
        } else {
            Position::Earlier
        };
        match decide(position, scan.ending) {
            Action::Keep => {}
            Action::TruncateTornTail { offset } => {
                recovery.torn_tail =
                    Some(cut_torn_tail(path, &bytes, offset, config.segment_bytes)?);
            }
            Action::Refuse { offset, defect } => {
                return Err(Error::Corrupt {
                    segment: path.clone(),
                    offset,
                    defect,
                });
            }
        }
        recovery.records += scan.records;
        sparse_index.extend(scan.index.iter().map(|&(lsn, offset)| IndexEntry {
            lsn,
            segment: *first_lsn,
            offset,
        }));
        previous_last_lsn = Some(scan.last_lsn());
        segments.push(SegmentEntry {
            first_lsn: *first_lsn,
            segment_id: scan.header.segment_id,
            path: path.clone(),
        });
        last_scan = Some(scan);
    }
    // What a crashed process left may sit in the page cache only. Everything recovered is called
    // durable from here on (a checkpoint may claim to cover it), so make it so: fdatasync every
    // segment and the directory, as PostgreSQL does at crash start.
    for entry in &segments {
        File::open(&entry.path)
            .and_then(|file| file.sync_data())
            .map_err(|source| {
                Error::io(
                    "fdatasync recovered segment",
                    entry.path.clone(),
                    None,
                    source,
                )
            })?;
    }
    segment::sync_dir(dir)?;
    let (Some(last), Some(entry)) = (last_scan, segments.last()) else {
        return Err(Error::BadSegment {
            segment: dir.to_path_buf(),
            reason: "no segment survived recovery".into(),
        });
    };
    let file = OpenOptions::new()
        .write(true)
        .open(&entry.path)
        .map_err(|source| {
            Error::io("open segment for writing", entry.path.clone(), None, source)
        })?;
    let start = Start {
        dir: dir.to_path_buf(),
        next_lsn: last.last_lsn() + 1,
        segment: last.header,
        segment_len: last.valid_end,
        file,
        segments,
        index: sparse_index,
        lock_file,
    };
    Ok((start, recovery))
}

/// Cuts the last segment at `offset`, keeping a copy of the cut bytes (up to the last non-zero
/// one) beside it, and preallocates the segment again.
fn cut_torn_tail(path: &Path, bytes: &[u8], offset: u64, preallocate: u64) -> Result<TornTail> {
    let tail = &bytes[offset as usize..];
    let cut = &tail[..tail
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1)];
    let saved_to = segment::set_aside(path, &format!("torn-{offset}"), cut)?;
    let io = |op, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::io(op, p, Some(offset), source)
    };
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open segment", path))?;
    file.set_len(offset)
        .map_err(io("truncate torn tail", path))?;
    file.set_len(preallocate.max(offset))
        .map_err(io("preallocate segment", path))?;
    file.sync_all()
        .map_err(io("fsync truncated segment", path))?;
    if let Some(dir) = path.parent() {
        segment::sync_dir(dir)?;
    }
    tracing::warn!(
        segment = %path.display(),
        offset,
        bytes = cut.len(),
        saved_to = %saved_to.display(),
        "wal recovery cut a torn tail"
    );
    Ok(TornTail {
        segment: path.to_path_buf(),
        offset,
        bytes: cut.len() as u64,
        saved_to,
    })
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every segment, oldest first.
    pub segments: Vec<SegmentReport>,
    /// Valid records in all segments.
    pub records: u64,
    /// The oldest LSN kept, if any record is.
    pub first_lsn: Option<Lsn>,
    /// The newest valid LSN, if any.
    pub last_lsn: Option<Lsn>,
    /// Everything wrong that was found, in log order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether no problem at all was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether `open` would refuse this log (a torn tail alone is not refused).
    pub fn needs_repair(&self) -> bool {
        self.problems
            .iter()
            .any(|p| !matches!(p.kind, ProblemKind::TornTail { .. }))
    }
}

/// One segment in a [`VerifyReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// LSN its name and header give for its first record.
    pub first_lsn: Lsn,
    /// Valid records in it.
    pub records: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The segment it is in.
    pub segment: PathBuf,
    /// Where in the segment.
    pub offset: u64,
    /// What it is.
    pub kind: ProblemKind,
}

/// The kinds of [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The last segment ends in a partial record; open cuts it.
    TornTail {
        /// Why the first cut record is bad.
        defect: crate::Defect,
        /// Bytes open would cut.
        bytes: u64,
    },
    /// A bad record where the log must be whole; open refuses.
    Corrupt {
        /// What is wrong with it.
        defect: crate::Defect,
        /// Whether valid records follow it in the same segment.
        valid_records_follow: bool,
    },
    /// The segment header is bad, disagrees with the name, or leaves a gap.
    BadSegment {
        /// What is wrong.
        reason: String,
    },
}

/// Checks every segment in `dir` without changing anything; `live_end` caps the last segment at
/// the bytes a running log has finished writing: `(first lsn of that segment, end offset)`.
pub(crate) fn verify(dir: &Path, live_end: Option<(Lsn, u64)>) -> Result<VerifyReport> {
    let mut found = segment::list(dir, false)?;
    if let Some((live_first, _)) = live_end {
        found.retain(|(first, _)| *first <= live_first);
    }
    let mut report = VerifyReport::default();
    let mut previous_last_lsn = None;
    for (index, (first_lsn, path)) in found.iter().enumerate() {
        let mut bytes = read_segment(path)?;
        let file_bytes = bytes.len() as u64;
        if let Some((live_first, end)) = live_end
            && live_first == *first_lsn
        {
            bytes.truncate(end as usize);
        }
        let problem = |offset, kind| Problem {
            segment: path.clone(),
            offset,
            kind,
        };
        let scan = match scan_segment(path, &bytes, *first_lsn) {
            Ok(scan) => scan,
            Err(error) => {
                report.problems.push(problem(
                    0,
                    ProblemKind::BadSegment {
                        reason: error.to_string(),
                    },
                ));
                report.segments.push(SegmentReport {
                    path: path.clone(),
                    first_lsn: *first_lsn,
                    records: 0,
                    bytes: file_bytes,
                });
                previous_last_lsn = None;
                continue;
            }
        };
        if let Err(error) = check_continuity(path, &scan, previous_last_lsn) {
            report.problems.push(problem(
                0,
                ProblemKind::BadSegment {
                    reason: error.to_string(),
                },
            ));
        }
        let position = if index + 1 == found.len() {
            Position::Last
        } else {
            Position::Earlier
        };
        match scan.ending {
            Ending::Clean => {}
            Ending::Torn { offset, defect } if position == Position::Last => {
                report.problems.push(problem(
                    offset,
                    ProblemKind::TornTail {
                        defect,
                        bytes: bytes.len() as u64 - offset,
                    },
                ));
            }
            Ending::Torn { offset, defect } => report.problems.push(problem(
                offset,
                ProblemKind::Corrupt {
                    defect,
                    valid_records_follow: false,
                },
            )),
            Ending::Corrupt { offset, defect } => report.problems.push(problem(
                offset,
                ProblemKind::Corrupt {
                    defect,
                    valid_records_follow: true,
                },
            )),
        }
        if scan.records > 0 {
            report.first_lsn.get_or_insert(scan.header.first_lsn);
            report.last_lsn = Some(scan.last_lsn());
        }
        report.records += scan.records;
        previous_last_lsn = Some(scan.last_lsn());
        report.segments.push(SegmentReport {
            path: path.clone(),
            first_lsn: *first_lsn,
            records: scan.records,
            bytes: file_bytes,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Defect;

    #[test]
    fn decision_table_covers_every_case() {
        let d = Defect::ChecksumMismatch;
        let cases = [
            (Position::Earlier, Ending::Clean, Action::Keep),
            (
                Position::Earlier,
                Ending::Torn {
                    offset: 8,
                    defect: d,
                },
                Action::Refuse {
                    offset: 8,
                    defect: d,
                },
            ),
            (
                Position::Earlier,
                Ending::Corrupt {
                    offset: 8,
                    defect: d,
                },
                Action::Refuse {
                    offset: 8,
                    defect: d,
                },
            ),
            (Position::Last, Ending::Clean, Action::Keep),
            (
                Position::Last,
                Ending::Torn {
                    offset: 8,
                    defect: d,
                },
                Action::TruncateTornTail { offset: 8 },
            ),
            (
                Position::Last,
                Ending::Corrupt {
                    offset: 8,
                    defect: d,
                },
                Action::Refuse {
                    offset: 8,
                    defect: d,
                },
            ),
        ];
        for position in [Position::Earlier, Position::Last] {
            for ending in [
                Ending::Clean,
                Ending::Torn {
                    offset: 8,
                    defect: d,
                },
                Ending::Corrupt {
                    offset: 8,
                    defect: d,
                },
            ] {
                let rows: Vec<_> = cases
                    .iter()
                    .filter(|(p, e, _)| *p == position && *e == ending)
                    .collect();
                assert_eq!(
                    rows.len(),
                    1,
                    "{position:?} {ending:?} must match exactly one row"
                );
                assert_eq!(
                    decide(position, ending),
                    rows[0].2,
                    "{position:?} {ending:?}"
                );
            }
        }
    }
}
