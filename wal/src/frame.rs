//! Record framing: how one record is laid out in a segment, and how bytes are checked on the way
//! back in.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32      CRC-32 (crc32fast) of bytes 4..24 and of the payload
//!      4     4  len        payload length in bytes
//!      8     8  lsn        log sequence number of this record
//!     16     8  segment    id of the segment the record was written into
//!     24   len  payload    opaque bytes
//!      …   0-7  padding    zeros, so the next frame starts 8-byte aligned
//! ```
//!
//! All integers are little-endian. Frames are 8-byte aligned so that the CRC and length (a frame's
//! first 8 bytes) never straddle a 512-byte sector: a torn write can cut a record, but never half
//! of its length field.
//! The segment id inside the CRC makes bytes left over from another segment (a reused or copied
//! file) fail the check even when their own CRC is intact.

/// Bytes of a frame before its payload.
pub(crate) const HEADER_LEN: usize = 24;
/// The largest payload the format can describe (the length field is 32 bits). Reading and recovery
/// judge frames by this and by the bytes actually there, never by the configured maximum, which
/// only limits appends: lowering it must not make existing records look corrupt.
pub(crate) const FORMAT_MAX_RECORD: usize = u32::MAX as usize;

/// Frames start at multiples of this many bytes.
pub(crate) const ALIGN: usize = 8;

const _: () = assert!(HEADER_LEN.is_multiple_of(ALIGN));

/// Total bytes one record with a payload of `payload_len` bytes occupies, padding included.
pub(crate) const fn frame_len(payload_len: usize) -> usize {
    (HEADER_LEN + payload_len).next_multiple_of(ALIGN)
}

/// Appends the frame for one record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, lsn: u64, segment_id: u64, payload: &[u8]) {
    debug_assert!(lsn > 0, "lsn 0 is never written");
    debug_assert!(u32::try_from(payload.len()).is_ok());
    let start = buf.len();
    let len = payload.len() as u32;
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(&segment_id.to_le_bytes());
    buf.extend_from_slice(payload);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[start + 4..]);
    let crc = hasher.finalize();
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    buf.resize(start + frame_len(payload.len()), 0);
}

/// A frame header as read from disk, not yet checked against its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub crc: u32,
    pub len: u32,
    pub lsn: u64,
    pub segment_id: u64,
}

impl Header {
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        Self {
            crc: u32_at(0),
            len: u32_at(4),
            lsn: u64_at(8),
            segment_id: u64_at(16),
        }
    }

    /// Whether every header byte is zero: what a preallocated or zero-filled tail looks like.
    pub(crate) fn is_zero(&self) -> bool {
        self.crc == 0 && self.len == 0 && self.lsn == 0 && self.segment_id == 0
    }

    /// The CRC this header should carry for `payload`.
    pub(crate) fn expected_crc(bytes: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&bytes[4..]);
        hasher.update(payload);
        hasher.finalize()
    }
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Defect {
    /// Fewer bytes remain than the frame needs: the write of this record was cut short.
    Incomplete,
    /// The header is all zeros: space that was never written.
    Zeroed,
    /// The length field is larger than the log's maximum record size.
    OversizedLength {
        /// The length the header claims.
        len: u32,
    },
    /// The CRC does not match the header and payload.
    ChecksumMismatch,
    /// The frame belongs to another segment (stale bytes from a reused or copied file).
    ForeignSegment {
        /// The segment id in the frame.
        found: u64,
    },
    /// The frame is intact but carries an unexpected LSN.
    LsnOutOfOrder {
        /// The LSN the next record must have.
        expected: u64,
        /// The LSN the frame has.
        found: u64,
    },
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Defect::Incomplete => f.write_str("record cut short by the end of the file"),
            Defect::Zeroed => f.write_str("zeroed bytes where a record header should be"),
            Defect::OversizedLength { len } => {
                write!(f, "length field {len} exceeds the maximum record size")
            }
            Defect::ChecksumMismatch => f.write_str("crc mismatch"),
            Defect::ForeignSegment { found } => {
                write!(
                    f,
                    "record belongs to segment id {found:#018x}, not this segment"
                )
            }
            Defect::LsnOutOfOrder { expected, found } => {
                write!(f, "expected lsn {expected}, found {found}")
            }
        }
    }
}

/// The outcome of decoding the frame that starts at the beginning of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    Record {
        lsn: u64,
        payload: &'a [u8],
        frame_len: usize,
    },
    Bad(Defect),
}

/// Decodes the frame at the start of `bytes`, which must be the record `expected_lsn` of segment
/// `segment_id`.
pub(crate) fn decode(
    bytes: &[u8],
    segment_id: u64,
    expected_lsn: u64,
    max_record: usize,
) -> Decoded<'_> {
    let Some(header_bytes) = bytes.first_chunk::<HEADER_LEN>() else {
        return if bytes.iter().all(|&b| b == 0) {
            Decoded::Bad(Defect::Zeroed)
        } else {
            Decoded::Bad(Defect::Incomplete)
        };
    };
    let header = Header::parse(header_bytes);
    if header.is_zero() {
        return Decoded::Bad(Defect::Zeroed);
    }
    if header.len as usize > max_record {
        return Decoded::Bad(Defect::OversizedLength { len: header.len });
    }
    let len = header.len as usize;
    // The whole frame, padding included, must be there: a record whose padding was cut was still
    // being written, and keeping it would leave the next frame misaligned.
    let frame_len = frame_len(len);
    if bytes.len() < frame_len {
        return Decoded::Bad(Defect::Incomplete);
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
    if Header::expected_crc(header_bytes, payload) != header.crc {
        return Decoded::Bad(Defect::ChecksumMismatch);
    }
    if header.segment_id != segment_id {
        return Decoded::Bad(Defect::ForeignSegment {
            found: header.segment_id,
        });
    }
    if header.lsn != expected_lsn {
        return Decoded::Bad(Defect::LsnOutOfOrder {
            expected: expected_lsn,
            found: header.lsn,
        });
    }
    Decoded::Record {
        lsn: header.lsn,
        payload,
        frame_len,
    }
}

/// Whether an intact record of segment `segment_id` with an LSN of at least `min_lsn` starts at
/// `bytes`: used after a bad record to tell a torn tail (nothing valid follows) from corruption
/// in the middle of the log (valid records follow).
pub(crate) fn is_valid_frame_at(
    bytes: &[u8],
    segment_id: u64,
    min_lsn: u64,
    max_record: usize,
) -> bool {
    let Some(header_bytes) = bytes.first_chunk::<HEADER_LEN>() else {
        return false;
    };
    let header = Header::parse(header_bytes);
    if header.segment_id != segment_id || header.lsn < min_lsn || header.len as usize > max_record {
        return false;
    }
    let Some(payload) = bytes.get(HEADER_LEN..HEADER_LEN + header.len as usize) else {
        return false;
    };
    Header::expected_crc(header_bytes, payload) == header.crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        for len in [0usize, 1, 7, 8, 9, 63, 64, 1000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = Vec::new();
            encode(&mut buf, 42, 7, &payload);
            assert_eq!(buf.len(), frame_len(len));
            assert_eq!(buf.len() % ALIGN, 0);
            assert_eq!(
                decode(&buf, 7, 42, 1 << 20),
                Decoded::Record {
                    lsn: 42,
                    payload: &payload,
                    frame_len: buf.len()
                }
            );
        }
    }

    #[test]
    fn every_single_bit_flip_in_header_or_payload_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 3, 9, b"hello, wal");
        let covered = HEADER_LEN + 10;
        for bit in 0..covered * 8 {
            let mut copy = buf.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&copy, 9, 3, 1 << 20), Decoded::Record { .. }),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn foreign_segment_and_wrong_lsn_are_refused() {
        let mut buf = Vec::new();
        encode(&mut buf, 5, 1, b"x");
        assert_eq!(
            decode(&buf, 2, 5, 64),
            Decoded::Bad(Defect::ForeignSegment { found: 1 })
        );
        assert_eq!(
            decode(&buf, 1, 6, 64),
            Decoded::Bad(Defect::LsnOutOfOrder {
                expected: 6,
                found: 5
            })
        );
        assert_eq!(
            decode(&buf[..10], 1, 5, 64),
            Decoded::Bad(Defect::Incomplete)
        );
        assert_eq!(decode(&[0u8; 40], 1, 5, 64), Decoded::Bad(Defect::Zeroed));
        assert_eq!(
            decode(&buf, 1, 5, 0),
            Decoded::Bad(Defect::OversizedLength { len: 1 })
        );
    }
}
