//! A zip archive written front to back, for streaming: entries are stored (not
//! compressed), each followed by a data descriptor with its CRC-32 and size, so nothing
//! is ever rewritten and no entry has to be held whole. Entries and the archive stay
//! under 4 GiB (no ZIP64), which a resident's data is far from.

use crc::{Crc, Digest, CRC_32_ISO_HDLC};

static CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// General purpose flags: sizes and CRC follow the data (bit 3), names are UTF-8 (bit 11).
const FLAGS: u16 = 0x0808;
const VERSION: u16 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("the archive would pass 4 GiB, which needs ZIP64")]
    TooLarge,
    #[error("an entry is already open")]
    EntryOpen,
}

struct Entry {
    name: String,
    offset: u32,
    crc: u32,
    size: u32,
}

struct Open {
    name: String,
    offset: u32,
    digest: Digest<'static, u32>,
    size: u64,
}

/// Produces an archive's bytes piece by piece: `begin`, `data`…, `end` per entry, then
/// `finish`. Each call returns the bytes to send next.
pub struct ZipStream {
    offset: u64,
    entries: Vec<Entry>,
    open: Option<Open>,
    /// MS-DOS time and date every entry carries.
    dos: (u16, u16),
}

fn u32_of(n: u64) -> Result<u32, ZipError> {
    u32::try_from(n).map_err(|_| ZipError::TooLarge)
}

/// MS-DOS time and date of a moment (two-second resolution, years 1980–2107).
fn dos_time(t: chrono::DateTime<chrono::Utc>) -> (u16, u16) {
    use chrono::{Datelike, Timelike};
    let year = t.year().clamp(1980, 2107) as u16 - 1980;
    let time = ((t.hour() as u16) << 11) | ((t.minute() as u16) << 5) | (t.second() as u16 / 2);
    let date = (year << 9) | ((t.month() as u16) << 5) | t.day() as u16;
    (time, date)
}

impl ZipStream {
    pub fn new(at: chrono::DateTime<chrono::Utc>) -> Self {
        ZipStream {
            offset: 0,
            entries: Vec::new(),
            open: None,
            dos: dos_time(at),
        }
    }

    fn emit(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, ZipError> {
        self.offset += bytes.len() as u64;
        u32_of(self.offset)?;
        Ok(bytes)
    }

    /// Starts an entry: its local header.
    pub fn begin(&mut self, name: &str) -> Result<Vec<u8>, ZipError> {
        if self.open.is_some() {
            return Err(ZipError::EntryOpen);
        }
        let mut h = Vec::with_capacity(30 + name.len());
        put32(&mut h, 0x0403_4b50);
        put16(&mut h, VERSION);
        put16(&mut h, FLAGS);
        put16(&mut h, 0); // stored
        put16(&mut h, self.dos.0);
        put16(&mut h, self.dos.1);
        put32(&mut h, 0); // CRC, sizes: in the descriptor
        put32(&mut h, 0);
        put32(&mut h, 0);
        put16(&mut h, name.len() as u16);
        put16(&mut h, 0);
        h.extend_from_slice(name.as_bytes());
        self.open = Some(Open {
            name: name.to_string(),
            offset: u32_of(self.offset)?,
            digest: CRC32.digest(),
            size: 0,
        });
        self.emit(h)
    }

    /// Data of the open entry, passed through.
    pub fn data(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, ZipError> {
        if let Some(open) = &mut self.open {
            open.digest.update(&bytes);
            open.size += bytes.len() as u64;
        }
        self.emit(bytes)
    }

    /// Ends the open entry: its data descriptor.
    pub fn end(&mut self) -> Result<Vec<u8>, ZipError> {
        let Some(open) = self.open.take() else {
            return Ok(Vec::new());
        };
        let entry = Entry {
            name: open.name,
            offset: open.offset,
            crc: open.digest.finalize(),
            size: u32_of(open.size)?,
        };
        let mut d = Vec::with_capacity(16);
        put32(&mut d, 0x0807_4b50);
        put32(&mut d, entry.crc);
        put32(&mut d, entry.size);
        put32(&mut d, entry.size);
        self.entries.push(entry);
        self.emit(d)
    }

    /// The central directory and its end record, after the last entry.
    pub fn finish(mut self) -> Result<Vec<u8>, ZipError> {
        let mut out = self.end()?;
        let start = u32_of(self.offset)?;
        let mut dir = Vec::new();
        for e in &self.entries {
            put32(&mut dir, 0x0201_4b50);
            put16(&mut dir, VERSION);
            put16(&mut dir, VERSION);
            put16(&mut dir, FLAGS);
            put16(&mut dir, 0);
            put16(&mut dir, self.dos.0);
            put16(&mut dir, self.dos.1);
            put32(&mut dir, e.crc);
            put32(&mut dir, e.size);
            put32(&mut dir, e.size);
            put16(&mut dir, e.name.len() as u16);
            put16(&mut dir, 0); // extra
            put16(&mut dir, 0); // comment
            put16(&mut dir, 0); // disk
            put16(&mut dir, 0); // internal attributes
            put32(&mut dir, 0); // external attributes
            put32(&mut dir, e.offset);
            dir.extend_from_slice(e.name.as_bytes());
        }
        let size = u32_of(dir.len() as u64)?;
        u32_of(self.offset + dir.len() as u64 + 22)?;
        let count = u16::try_from(self.entries.len()).map_err(|_| ZipError::TooLarge)?;
        put32(&mut dir, 0x0605_4b50);
        put16(&mut dir, 0);
        put16(&mut dir, 0);
        put16(&mut dir, count);
        put16(&mut dir, count);
        put32(&mut dir, size);
        put32(&mut dir, start);
        put16(&mut dir, 0);
        out.extend(dir);
        Ok(out)
    }
}

fn put16(v: &mut Vec<u8>, n: u16) {
    v.extend_from_slice(&n.to_le_bytes());
}

fn put32(v: &mut Vec<u8>, n: u32) {
    v.extend_from_slice(&n.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_holds_its_entries_with_their_crc_in_the_central_directory() -> Result<(), ZipError>
    {
        let mut z = ZipStream::new(chrono::Utc::now());
        let mut bytes = z.begin("a.jsonl")?;
        bytes.extend(z.data(b"{\"x\":1}\n".to_vec())?);
        bytes.extend(z.end()?);
        bytes.extend(z.begin("b.json")?);
        bytes.extend(z.finish()?);
        // End record: two entries; the directory starts where the second entry's
        // descriptor ends.
        let end = &bytes[bytes.len() - 22..];
        assert_eq!(&end[..4], &0x0605_4b50u32.to_le_bytes());
        assert_eq!(u16::from_le_bytes([end[10], end[11]]), 2);
        let crc = CRC32.checksum(b"{\"x\":1}\n");
        let first_dir = u32::from_le_bytes([end[16], end[17], end[18], end[19]]) as usize;
        assert_eq!(&bytes[first_dir + 16..first_dir + 20], &crc.to_le_bytes());
        Ok(())
    }
}
