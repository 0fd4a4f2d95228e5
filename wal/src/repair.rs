//! Repair: the explicit way past a log that `open` refuses.
//!
//! Repair keeps the longest valid prefix of the log and sets everything after it aside, never
//! deleting it: the damaged segment is copied whole to `<name>.broken` and then cut at its first
//! bad record; every later segment is renamed to `<name>.broken`. If the first bad thing is a
//! segment header, that segment is set aside whole and an empty segment takes its place (same first
//! LSN), so LSNs keep counting from where the valid prefix ends. The directory is fsynced at the
//! end. Records after the cut are lost to the log: that is the price of repair, which is why `open`
//! never does it by itself.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::recovery::{self, check_continuity, read_segment, scan_segment};
use crate::segment::{self, Ending, SegmentHeader};
use crate::{Config, Error, Lsn, Result};

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Where the log was cut: the segment and offset of the first bad record (offset 0 for a bad
    /// segment header). `None` if the log needed no repair.
    pub cut_at: Option<(PathBuf, u64)>,
    /// The last LSN kept (0 if no record was kept).
    pub last_kept_lsn: Lsn,
    /// Files holding what was set aside (`*.broken`).
    pub set_aside: Vec<PathBuf>,
}

/// Cuts the log in `dir` at its first bad record or segment, setting aside (not deleting) what
/// follows, so that [`Wal::open`](crate::Wal::open) succeeds afterwards. A torn tail in the last
/// segment is cut the same way. Takes the directory's lock: the log must not be open.
///
/// ```
/// # fn main() -> Result<(), arbor_wal::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use arbor_wal::{repair, Config, Wal};
/// let report = repair(dir.path(), &Config::default())?;
/// assert!(report.cut_at.is_none()); // nothing was wrong
/// let wal = Wal::open(dir.path(), Config::default())?;
/// # drop(wal);
/// # Ok(()) }
/// ```
pub fn repair(dir: &Path, config: &Config) -> Result<RepairReport> {
    config.validate()?;
    let _lock = recovery::lock_dir(dir)?;
    let found = segment::list(dir, true)?;
    let mut report = RepairReport::default();
    let mut previous_last_lsn = None;
    for (index, (first_lsn, path)) in found.iter().enumerate() {
        let bytes = read_segment(path)?;
        let scan = scan_segment(path, &bytes, *first_lsn)
            .and_then(|scan| check_continuity(path, &scan, previous_last_lsn).map(|()| scan));
        let cut = match &scan {
            Err(_) => Some(0),
            Ok(scan) => match scan.ending {
                Ending::Clean => None,
                Ending::Torn { offset, .. } | Ending::Corrupt { offset, .. } => Some(offset),
            },
        };
        let Some(offset) = cut else {
            if let Ok(scan) = scan {
                previous_last_lsn = Some(scan.last_lsn());
                report.last_kept_lsn = scan.last_lsn();
            }
            continue;
        };
        report
            .set_aside
            .push(segment::set_aside(path, "broken", &bytes)?);
        match scan {
            Ok(scan) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|source| Error::io("open segment", path.clone(), None, source))?;
                file.set_len(offset).map_err(|source| {
                    Error::io("truncate segment", path.clone(), Some(offset), source)
                })?;
                file.sync_all()
                    .map_err(|source| Error::io("fsync segment", path.clone(), None, source))?;
                report.last_kept_lsn = scan.header.first_lsn + scan.records - 1;
            }
            Err(_) => {
                // The header itself is unusable: start an empty segment where the valid prefix
                // ends, so the next LSN follows the last kept record.
                fs::remove_file(path).map_err(|source| {
                    Error::io("remove damaged segment", path.clone(), None, source)
                })?;
                let first = previous_last_lsn.map_or(*first_lsn, |last| last + 1);
                segment::create(
                    dir,
                    SegmentHeader {
                        segment_id: segment::new_segment_id(first),
                        first_lsn: first,
                    },
                    config.segment_bytes,
                )?;
            }
        }
        report.cut_at = Some((path.clone(), offset));
        for (_, later) in &found[index + 1..] {
            report
                .set_aside
                .push(segment::rename_aside(later, "broken")?);
        }
        segment::sync_dir(dir)?;
        tracing::warn!(dir = %dir.display(), ?report, "wal repaired");
        return Ok(report);
    }
    Ok(report)
}
