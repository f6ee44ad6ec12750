//! Change bitmaps: which ranges of a disk changed since the last round.
//!
//! Three inputs are accepted, all turned into an [`ExtentSet`] of bytes:
//! - the native format (docs/BITMAP.md), exactly: a 32-byte little-endian header
//!   (`BRCBMAP1`, granularity, flags, device size, generation) and one bit per granule;
//! - the XML block list printed by dm-era's `era_invalidate` (`<blocks>`, `<range begin end>`
//!   with `end` exclusive, `<block block>`), with the era block size given by the caller;
//! - a plain text extent list: `offset length` in bytes per line, `#` comments.
//!
//! Every input is untrusted: lengths, counts and line sizes are bounded, ranges are checked
//! against the disk, and a file that does not match the disk is refused.

use std::io::{self, BufRead, Read, Write};

use crate::{ExtentSet, ReadAt};

/// The native format's magic. Must not change.
pub const MAGIC: [u8; 8] = *b"BRCBMAP1";
/// Bytes before the bits.
pub const HEADER_LEN: usize = 32;
/// Smallest granularity (4 KiB).
pub const MIN_GRANULARITY: u32 = 4096;
/// Largest granularity (64 MiB).
pub const MAX_GRANULARITY: u32 = 64 << 20;
/// Longest line (or XML element) accepted in the text formats.
const MAX_LINE: usize = 4096;

/// Why a change bitmap cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BitmapError {
    /// Reading the file failed.
    #[error("cannot read the bitmap: {0}")]
    Io(#[from] io::Error),
    /// The header is not a native bitmap header, or a field is out of range.
    #[error("bad bitmap header: {0}")]
    Header(String),
    /// The bitmap describes a device of another size.
    #[error("the bitmap is for a {bitmap}-byte device, but the disk is {disk} bytes; was it made for another disk?")]
    DeviceSize {
        /// Size in the bitmap.
        bitmap: u64,
        /// Size of the disk.
        disk: u64,
    },
    /// The file is longer or shorter than its header says.
    #[error("the bitmap file is {actual} bytes, but its header implies {expected}; it is truncated or has trailing data")]
    Length {
        /// Bytes the header implies.
        expected: u64,
        /// Bytes found.
        actual: u64,
    },
    /// A line or element of a text format cannot be parsed.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based line (or element) number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A range reaches past the end of the disk.
    #[error("line {line}: range {offset}+{len} ends past the disk's {disk} bytes")]
    OutOfRange {
        /// 1-based line (or element) number.
        line: u64,
        /// Range start in bytes.
        offset: u64,
        /// Range length in bytes.
        len: u64,
        /// The disk size.
        disk: u64,
    },
}

/// A native change bitmap's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes per bit: a power of two from 4 KiB to 64 MiB.
    pub granularity: u32,
    /// The device's size in bytes.
    pub device_size: u64,
    /// The round number.
    pub generation: u64,
}

impl Header {
    /// Bits in the bitmap: one per granule, the last one possibly partial.
    pub fn bits(&self) -> u64 {
        self.device_size.div_ceil(u64::from(self.granularity))
    }

    /// Total file length.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + self.bits().div_ceil(8)
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, BitmapError> {
        if b[..8] != MAGIC {
            return Err(BitmapError::Header("no BRCBMAP1 magic".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let granularity = u32_at(8);
        if !granularity.is_power_of_two()
            || !(MIN_GRANULARITY..=MAX_GRANULARITY).contains(&granularity)
        {
            return Err(BitmapError::Header(format!(
                "granularity {granularity} is not a power of two from 4 KiB to 64 MiB"
            )));
        }
        let flags = u32_at(12);
        if flags != 0 {
            return Err(BitmapError::Header(format!(
                "flags are {flags:#x}; version 1 defines none"
            )));
        }
        Ok(Self {
            granularity,
            device_size: u64_at(16),
            generation: u64_at(24),
        })
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.granularity.to_le_bytes());
        b[16..24].copy_from_slice(&self.device_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b
    }
}

/// Reads a native bitmap for a disk of `disk_size` bytes: the header and the changed byte
/// ranges (granules, the last one clipped to the disk). Streams: memory is the result only.
pub fn read_native(mut r: impl Read, disk_size: u64) -> Result<(Header, ExtentSet), BitmapError> {
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            BitmapError::Header("shorter than the 32-byte header".into())
        }
        _ => e.into(),
    })?;
    let header = Header::decode(&head)?;
    if header.device_size != disk_size {
        return Err(BitmapError::DeviceSize {
            bitmap: header.device_size,
            disk: disk_size,
        });
    }
    let gran = u64::from(header.granularity);
    let bits = header.bits();
    let bytes = bits.div_ceil(8);
    let mut changed = ExtentSet::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < bytes {
        let want = (bytes - done).min(buf.len() as u64) as usize;
        let got = read_full(&mut r, &mut buf[..want])?;
        if got < want {
            return Err(BitmapError::Length {
                expected: header.file_len(),
                actual: HEADER_LEN as u64 + done + got as u64,
            });
        }
        for (i, &byte) in buf[..want].iter().enumerate() {
            if byte == 0 {
                continue;
            }
            for bit in 0..8 {
                if byte & (1 << bit) == 0 {
                    continue;
                }
                let index = (done + i as u64) * 8 + bit;
                if index >= bits {
                    return Err(BitmapError::Header(format!(
                        "bit {index} is set, past the last granule ({bits} granules)"
                    )));
                }
                let offset = index * gran;
                changed.insert(offset, gran.min(disk_size - offset));
            }
        }
        done += want as u64;
    }
    let mut extra = [0u8; 1];
    if read_full(&mut r, &mut extra)? != 0 {
        return Err(BitmapError::Length {
            expected: header.file_len(),
            actual: header.file_len() + 1,
        });
    }
    Ok((header, changed))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes a native bitmap: a bit is set for every granule that `changed` touches.
pub fn write_native(mut w: impl Write, header: Header, changed: &ExtentSet) -> io::Result<()> {
    w.write_all(&header.encode())?;
    let gran = u64::from(header.granularity);
    let bits = header.bits();
    let mut extents = changed.iter().peekable();
    let mut buf = Vec::with_capacity(64 * 1024);
    for byte_index in 0..bits.div_ceil(8) {
        let mut byte = 0u8;
        for bit in 0..8u64 {
            let index = byte_index * 8 + bit;
            if index >= bits {
                break;
            }
            let (start, end) = (index * gran, (index + 1) * gran);
            while extents.peek().is_some_and(|e| e.end() <= start) {
                extents.next();
            }
            if extents.peek().is_some_and(|e| e.offset < end) {
                byte |= 1 << bit;
            }
        }
        buf.push(byte);
        if buf.len() == buf.capacity() {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one `>`-terminated XML element (or up to EOF), bounded.
fn next_element(r: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<bool> {
    out.clear();
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(!out.iter().all(u8::is_ascii_whitespace));
        }
        let (used, done) = match avail.iter().position(|&b| b == b'>') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        out.extend_from_slice(&avail[..used]);
        r.consume(used);
        if out.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an XML element is longer than 4096 bytes",
            ));
        }
        if done {
            return Ok(true);
        }
    }
}

fn attribute(element: &str, name: &str) -> Option<u64> {
    let mut rest = element;
    while let Some(i) = rest.find(name) {
        let after = rest[i + name.len()..].trim_start();
        let preceded = rest[..i].ends_with(|c: char| c.is_ascii_whitespace());
        if preceded {
            if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start();
                let quote = v.chars().next()?;
                if quote == '"' || quote == '\'' {
                    let inner = &v[1..];
                    let end = inner.find(quote)?;
                    return inner[..end].trim().parse().ok();
                }
                return None;
            }
        }
        rest = &rest[i + name.len()..];
    }
    None
}

/// Parses `era_invalidate` output: era blocks of `era_block_size` bytes.
pub fn read_era_xml(
    r: impl BufRead,
    era_block_size: u64,
    disk_size: u64,
) -> Result<ExtentSet, BitmapError> {
    if era_block_size == 0 || !era_block_size.is_multiple_of(512) {
        return Err(BitmapError::Header(format!(
            "era block size {era_block_size} is not a positive multiple of 512"
        )));
    }
    let mut r = r;
    let mut changed = ExtentSet::new();
    let mut element = Vec::new();
    let mut n = 0u64;
    let mut opened = false;
    let mut closed = false;
    while next_element(&mut r, &mut element)? {
        n += 1;
        let parse = |message: String| BitmapError::Parse { line: n, message };
        let text = std::str::from_utf8(&element)
            .map_err(|_| parse("not UTF-8".into()))?
            .trim();
        let body = text
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .ok_or_else(|| {
                parse(format!(
                    "expected an XML element, found {:?}",
                    truncate(text)
                ))
            })?
            .trim();
        if body.starts_with('?') || body.starts_with('!') {
            continue; // declaration or comment
        }
        if closed {
            return Err(parse("content after </blocks>".into()));
        }
        let name = match body.strip_prefix('/') {
            Some(closing) if closing.trim() == "blocks" => "/blocks",
            _ => body
                .split(|c: char| c.is_ascii_whitespace() || c == '/')
                .next()
                .unwrap_or(""),
        };
        let (first, count) = match name {
            "blocks" if !opened => {
                opened = true;
                continue;
            }
            "/blocks" if opened => {
                closed = true;
                continue;
            }
            "range" if opened => {
                let begin = attribute(body, "begin")
                    .ok_or_else(|| parse("<range> without a numeric begin".into()))?;
                let end = attribute(body, "end")
                    .ok_or_else(|| parse("<range> without a numeric end".into()))?;
                if end <= begin {
                    return Err(parse(format!(
                        "<range begin={begin} end={end}> is empty or reversed"
                    )));
                }
                (begin, end - begin)
            }
            "block" if opened => {
                let b = attribute(body, "block")
                    .ok_or_else(|| parse("<block> without a numeric block".into()))?;
                (b, 1)
            }
            other => return Err(parse(format!("unexpected element <{}>", truncate(other)))),
        };
        let offset = first.checked_mul(era_block_size);
        let len = count.checked_mul(era_block_size);
        let (Some(offset), Some(len)) = (offset, len) else {
            return Err(parse("block numbers overflow".into()));
        };
        // The last era block may be partial: clip, but refuse ranges starting past the end.
        if offset >= disk_size {
            return Err(BitmapError::OutOfRange {
                line: n,
                offset,
                len,
                disk: disk_size,
            });
        }
        changed.insert(offset, len.min(disk_size - offset));
    }
    if !opened || !closed {
        return Err(BitmapError::Parse {
            line: n,
            message: "not a complete <blocks> ... </blocks> list".into(),
        });
    }
    Ok(changed)
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parses a text extent list: `offset length` (decimal bytes) per line; blank lines and
/// `#` comments are ignored.
pub fn read_extent_list(r: impl BufRead, disk_size: u64) -> Result<ExtentSet, BitmapError> {
    let mut changed = ExtentSet::new();
    let mut line = Vec::new();
    let mut r = r.take(u64::MAX);
    let mut n = 0u64;
    loop {
        line.clear();
        let got = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if got == 0 {
            break;
        }
        n += 1;
        let parse = |message: String| BitmapError::Parse { line: n, message };
        if line.len() > MAX_LINE {
            return Err(parse("line longer than 4096 bytes".into()));
        }
        let text = std::str::from_utf8(&line).map_err(|_| parse("not UTF-8".into()))?;
        let text = text.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        let mut fields = text.split_ascii_whitespace();
        let (Some(o), Some(l), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(parse(format!(
                "expected `offset length`, found {:?}",
                truncate(text)
            )));
        };
        let offset: u64 = o
            .parse()
            .map_err(|_| parse(format!("{o:?} is not a byte offset")))?;
        let len: u64 = l
            .parse()
            .map_err(|_| parse(format!("{l:?} is not a byte length")))?;
        if offset.checked_add(len).is_none_or(|end| end > disk_size) {
            return Err(BitmapError::OutOfRange {
                line: n,
                offset,
                len,
                disk: disk_size,
            });
        }
        changed.insert(offset, len);
    }
    Ok(changed)
}

/// Which format a change file is in, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// blockrep's own bitmap file (`BRCBMAP1` header, one bit per block).
    Native,
    /// A dm-era block list (`era_invalidate` XML).
    EraXml,
    /// Text lines of `offset length` byte ranges.
    ExtentList,
}

/// Guesses the format from the start of a file: the native magic, an XML `<`, or text.
pub fn sniff(start: &[u8]) -> Format {
    if start.starts_with(&MAGIC) {
        Format::Native
    } else if start.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<') {
        Format::EraXml
    } else {
        Format::ExtentList
    }
}

/// Reads a change file of any accepted format. `era_block_size` is needed for era XML.
pub fn read_any(
    mut r: impl BufRead,
    disk_size: u64,
    era_block_size: Option<u64>,
) -> Result<ExtentSet, BitmapError> {
    let format = sniff(r.fill_buf()?);
    match format {
        Format::Native => read_native(r, disk_size).map(|(_, set)| set),
        Format::EraXml => {
            let size = era_block_size.ok_or_else(|| {
                BitmapError::Header(
                    "an era_invalidate block list needs the era block size (--era-block-size)"
                        .into(),
                )
            })?;
            read_era_xml(r, size, disk_size)
        }
        Format::ExtentList => read_extent_list(r, disk_size),
    }
}

/// The granules of `granularity` bytes where two equally sized images differ. Reads both in
/// 1 MiB pieces.
pub fn diff(
    old: &dyn ReadAt,
    new: &dyn ReadAt,
    granularity: u32,
) -> Result<ExtentSet, BitmapError> {
    let size = new.size();
    if old.size() != size {
        return Err(BitmapError::DeviceSize {
            bitmap: old.size(),
            disk: size,
        });
    }
    let gran = u64::from(granularity);
    let piece = gran.max(1 << 20);
    let (mut a, mut b) = (vec![0u8; piece as usize], vec![0u8; piece as usize]);
    let mut changed = ExtentSet::new();
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(piece) as usize;
        old.read_exact_at(&mut a[..n], offset)?;
        new.read_exact_at(&mut b[..n], offset)?;
        if a[..n] != b[..n] {
            for (i, (x, y)) in a[..n]
                .chunks(gran as usize)
                .zip(b[..n].chunks(gran as usize))
                .enumerate()
            {
                if x != y {
                    changed.insert(offset + i as u64 * gran, x.len() as u64);
                }
            }
        }
        offset += n as u64;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(granularity: u32, device_size: u64) -> Header {
        Header {
            granularity,
            device_size,
            generation: 7,
        }
    }

    fn native(h: Header, changed: &ExtentSet) -> Vec<u8> {
        let mut v = Vec::new();
        write_native(&mut v, h, changed).unwrap();
        v
    }

    #[test]
    fn native_layout_is_exact() {
        let h = header(4096, 10 * 4096 + 100); // 11 granules, the last partial
        let changed: ExtentSet = [
            crate::Extent::new(0, 1),
            crate::Extent::new(9 * 4096, 4096),
            crate::Extent::new(10 * 4096, 1),
        ]
        .into_iter()
        .collect();
        let v = native(h, &changed);
        assert_eq!(&v[..8], b"BRCBMAP1");
        assert_eq!(&v[8..12], &4096u32.to_le_bytes());
        assert_eq!(&v[12..16], &[0; 4]);
        assert_eq!(&v[16..24], &(10u64 * 4096 + 100).to_le_bytes());
        assert_eq!(&v[24..32], &7u64.to_le_bytes());
        assert_eq!(v.len(), 32 + 2);
        assert_eq!(v[32], 0b0000_0001); // granule 0
        assert_eq!(v[33], 0b0000_0110); // granules 9 and 10
        let (h2, set) = read_native(&v[..], h.device_size).unwrap();
        assert_eq!(h2, h);
        let want: ExtentSet = [
            crate::Extent::new(0, 4096),
            crate::Extent::new(9 * 4096, 4096 + 100),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, want, "granules, the last clipped to the disk");
    }

    #[test]
    fn rejects_a_bitmap_for_another_disk() {
        let v = native(header(4096, 1 << 20), &ExtentSet::new());
        assert!(matches!(
            read_native(&v[..], 2 << 20),
            Err(BitmapError::DeviceSize { .. })
        ));
    }

    #[test]
    fn rejects_truncated_and_trailing_files() {
        let v = native(header(4096, 1 << 20), &ExtentSet::range(0, 4096));
        assert!(matches!(
            read_native(&v[..v.len() - 1], 1 << 20),
            Err(BitmapError::Length { .. })
        ));
        let mut longer = v.clone();
        longer.push(0);
        assert!(matches!(
            read_native(&longer[..], 1 << 20),
            Err(BitmapError::Length { .. })
        ));
        assert!(matches!(
            read_native(&v[..10], 1 << 20),
            Err(BitmapError::Header(_))
        ));
    }

    #[test]
    fn rejects_bad_headers() {
        let good = native(header(4096, 1 << 20), &ExtentSet::new());
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_gran = good.clone();
        bad_gran[8..12].copy_from_slice(&3000u32.to_le_bytes());
        let mut huge_gran = good.clone();
        huge_gran[8..12].copy_from_slice(&(128u32 << 20).to_le_bytes());
        let mut flags = good.clone();
        flags[12] = 1;
        for v in [bad_magic, bad_gran, huge_gran, flags] {
            assert!(
                matches!(read_native(&v[..], 1 << 20), Err(BitmapError::Header(_))),
                "{v:?}"
            );
        }
    }

    #[test]
    fn rejects_padding_bits() {
        let mut v = native(header(4096, 3 * 4096), &ExtentSet::new());
        v[32] = 0b1000_0000; // bit 7, but only 3 granules
        assert!(matches!(
            read_native(&v[..], 3 * 4096),
            Err(BitmapError::Header(_))
        ));
    }

    #[test]
    fn era_xml() {
        let xml =
            "<blocks>\n  <range begin=\"1\" end=\"4\"/>\n  <block block=\"10\"/>\n</blocks>\n";
        let set = read_era_xml(xml.as_bytes(), 8192, 100 * 8192).unwrap();
        let want: ExtentSet = [
            crate::Extent::new(8192, 3 * 8192),
            crate::Extent::new(10 * 8192, 8192),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, want);
        assert_eq!(
            read_era_xml("<blocks>\n</blocks>".as_bytes(), 4096, 4096).unwrap(),
            ExtentSet::new()
        );
    }

    #[test]
    fn rejects_bad_era_xml() {
        let cases = [
            "<blocks><range begin=\"4\" end=\"4\"/></blocks>",
            "<blocks><range begin=\"1\"/></blocks>",
            "<blocks><block blok=\"1\"/></blocks>",
            "<blocks><thing/></blocks>",
            "<blocks><block block=\"1\"/>",
            "<range begin=\"1\" end=\"2\"/>",
            "<blocks><block block=\"100\"/></blocks>",
            "<blocks><block block=\"18446744073709551615\"/></blocks>",
            "<blocks></blocks><blocks>",
        ];
        for xml in cases {
            assert!(
                read_era_xml(xml.as_bytes(), 4096, 100 * 4096).is_err(),
                "{xml}"
            );
        }
        assert!(read_era_xml("<blocks></blocks>".as_bytes(), 0, 4096).is_err());
        let long = format!("<blocks><block {}block=\"1\"/></blocks>", " ".repeat(5000));
        assert!(read_era_xml(long.as_bytes(), 4096, 100 * 4096).is_err());
    }

    #[test]
    fn extent_list() {
        let text = "# offset length\n0 4096\n\n 8192   100 # tail\n";
        let set = read_extent_list(text.as_bytes(), 1 << 20).unwrap();
        let want: ExtentSet = [crate::Extent::new(0, 4096), crate::Extent::new(8192, 100)]
            .into_iter()
            .collect();
        assert_eq!(set, want);
        for bad in ["1", "1 2 3", "x 1", "0 2000000", "18446744073709551615 2"] {
            assert!(read_extent_list(bad.as_bytes(), 1 << 20).is_err(), "{bad}");
        }
    }

    #[test]
    fn sniffs_formats() {
        assert_eq!(sniff(b"BRCBMAP1...."), Format::Native);
        assert_eq!(sniff(b"  \n<blocks>"), Format::EraXml);
        assert_eq!(sniff(b"0 4096\n"), Format::ExtentList);
        let set = read_any(&b"0 10\n"[..], 100, None).unwrap();
        assert_eq!(set.total(), 10);
        assert!(
            read_any(&b"<blocks></blocks>"[..], 100, None).is_err(),
            "era needs a block size"
        );
    }

    #[test]
    fn diff_finds_changed_granules() {
        let old = vec![0u8; 3 << 20];
        let mut new = old.clone();
        new[5] = 1;
        new[(2 << 20) + 4096 * 3 + 7] = 1;
        let set = diff(&old, &new, 4096).unwrap();
        let want: ExtentSet = [
            crate::Extent::new(0, 4096),
            crate::Extent::new((2 << 20) + 4096 * 3, 4096),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, want);
        assert!(diff(&old, &vec![0u8; 10], 4096).is_err());
    }

    proptest::proptest! {
        #[test]
        fn native_round_trip(bits in proptest::collection::vec(proptest::bool::ANY, 1..300), tail in 1u64..4096) {
            let size = (bits.len() as u64 - 1) * 4096 + tail;
            let mut changed = ExtentSet::new();
            for (i, b) in bits.iter().enumerate() {
                if *b { changed.insert(i as u64 * 4096, 4096.min(size - i as u64 * 4096)); }
            }
            let v = native(header(4096, size), &changed);
            let (_, back) = read_native(&v[..], size).unwrap();
            proptest::prop_assert_eq!(back, changed);
        }

        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = read_native(&data[..], 1 << 20);
            let _ = read_era_xml(&data[..], 4096, 1 << 20);
            let _ = read_extent_list(&data[..], 1 << 20);
        }
    }
}
