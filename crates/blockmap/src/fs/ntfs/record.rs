//! MFT records ("FILE" records): the update sequence (fixups), the header and attributes.
//!
//! A multi-sector structure (FILE and RSTR records) guards against torn writes: the last two
//! bytes of every 512-byte stride hold the update sequence number, and the real bytes are
//! kept in the update sequence array near the start. Reading applies them back; a stride
//! whose last two bytes do not hold the number was torn or corrupted.

use crate::read::le;
use crate::{corrupt, MetaError};

/// The fixup stride, whatever the sector size.
pub const STRIDE: usize = 512;
/// Record flag: the record is in use.
const IN_USE: u16 = 0x0001;
/// Attribute type that ends the list.
const END: u32 = 0xFFFF_FFFF;
/// Attribute types read here.
pub const FILE_NAME: u32 = 0x30;
pub const VOLUME_INFORMATION: u32 = 0x70;
pub const DATA: u32 = 0x80;
/// Attribute flags this code does not read data through.
const COMPRESSED: u16 = 0x0001;
const ENCRYPTED: u16 = 0x4000;
const SPARSE: u16 = 0x8000;

/// Applies the update sequence of a multi-sector structure in place. `min_ofs` is where its
/// header ends (the array must come after it).
pub fn apply_fixups(buf: &mut [u8], min_ofs: usize, what: &str) -> Result<(), MetaError> {
    let usa_ofs = usize::from(le::u16(buf, 4)?);
    let usa_count = usize::from(le::u16(buf, 6)?);
    let strides = buf.len() / STRIDE;
    if !buf.len().is_multiple_of(STRIDE)
        || usa_count != strides + 1
        || !usa_ofs.is_multiple_of(2)
        || usa_ofs < min_ofs
        || usa_ofs + usa_count * 2 > STRIDE - 2
    {
        return Err(corrupt!(
            "ntfs {what}: update sequence array at {usa_ofs} with {usa_count} entries does not fit a {}-byte record",
            buf.len()
        ));
    }
    let usn = le::u16(buf, usa_ofs)?;
    for i in 1..=strides {
        let at = i * STRIDE - 2;
        let found = le::u16(buf, at)?;
        if found != usn {
            return Err(corrupt!(
                "ntfs {what}: fixup mismatch in 512-byte stride {} (found {found:#06x}, update sequence number {usn:#06x}): torn or corrupt",
                i - 1
            ));
        }
        let saved = le::u16(buf, usa_ofs + 2 * i)?;
        if let Some(dst) = buf.get_mut(at..at + 2) {
            dst.copy_from_slice(&saved.to_le_bytes());
        }
    }
    Ok(())
}

/// One attribute of a record: where it is and its common header fields.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ty: u32,
    /// Offset of the attribute in the record.
    pub at: usize,
    pub len: usize,
    pub non_resident: bool,
    pub name_len: u8,
    pub flags: u16,
}

/// A non-resident attribute's header fields.
#[derive(Debug, Clone, Copy)]
pub struct NonResident {
    pub lowest_vcn: u64,
    pub highest_vcn: u64,
    pub allocated: u64,
    pub size: u64,
    pub initialized: u64,
}

/// A base MFT record, fixups applied and header checked.
pub struct Record {
    buf: Vec<u8>,
    attrs: Vec<Attr>,
    name: &'static str,
}

impl Record {
    /// Checks the raw record `buf` read for MFT record `number` (a system file called
    /// `name`): magic, fixups, in-use, a base record, its number, its attribute list.
    pub fn parse(mut buf: Vec<u8>, number: u32, name: &'static str) -> Result<Self, MetaError> {
        if buf.get(0..4) != Some(&b"FILE"[..]) {
            let magic = buf.get(0..4).unwrap_or_default();
            return Err(corrupt!(
                "ntfs MFT record {number} ({name}): magic {:?} is not \"FILE\"",
                String::from_utf8_lossy(magic)
            ));
        }
        // The header is 0x2A bytes in NTFS 3.0 and older, 0x30 in 3.1.
        apply_fixups(&mut buf, 0x28, name)?;
        let flags = le::u16(&buf, 0x16)?;
        let used = le::u32(&buf, 0x18)? as usize;
        let allocated = le::u32(&buf, 0x1C)? as usize;
        let base = le::u64(&buf, 0x20)?;
        let first = usize::from(le::u16(&buf, 0x14)?);
        let usa_end = usize::from(le::u16(&buf, 4)?) + 2 * usize::from(le::u16(&buf, 6)?);
        if flags & IN_USE == 0 || base != 0 {
            return Err(corrupt!(
                "ntfs MFT record {number} ({name}): not an in-use base record (flags {flags:#x}, base {base:#x})"
            ));
        }
        if allocated != buf.len() || used > allocated || first < usa_end || !first.is_multiple_of(8)
        {
            return Err(corrupt!(
                "ntfs MFT record {number} ({name}): header sizes do not add up ({used} bytes used of {allocated}, record {} bytes, attributes at {first})",
                buf.len()
            ));
        }
        if usize::from(le::u16(&buf, 4)?) >= 0x30 {
            let stored = le::u32(&buf, 0x2C)?;
            if stored != number {
                return Err(corrupt!(
                    "ntfs MFT record {number} ({name}): the record says it is number {stored}"
                ));
            }
        }
        let mut attrs = Vec::new();
        let mut at = first;
        loop {
            let ty = le::u32(&buf, at)?;
            if ty == END {
                break;
            }
            let len = le::u32(&buf, at + 4)? as usize;
            if len < 0x18 || !len.is_multiple_of(8) || at + len > used {
                return Err(corrupt!(
                    "ntfs MFT record {number} ({name}): attribute {ty:#x} at {at} has length {len}, past the {used} bytes in use"
                ));
            }
            let non_resident = buf.get(at + 8).copied().unwrap_or(0) != 0;
            if non_resident && len < 0x40 {
                return Err(corrupt!(
                    "ntfs MFT record {number} ({name}): non-resident attribute {ty:#x} of only {len} bytes"
                ));
            }
            attrs.push(Attr {
                ty,
                at,
                len,
                non_resident,
                name_len: buf.get(at + 9).copied().unwrap_or(0),
                flags: le::u16(&buf, at + 0x0C)?,
            });
            at += len; // len >= 0x18, so the walk ends within the record
        }
        Ok(Self { buf, attrs, name })
    }

    /// A resident attribute's value.
    pub fn value(&self, a: &Attr) -> Result<&[u8], MetaError> {
        let len = le::u32(&self.buf, a.at + 0x10)? as usize;
        let off = usize::from(le::u16(&self.buf, a.at + 0x14)?);
        if a.non_resident || off.saturating_add(len) > a.len {
            return Err(corrupt!(
                "ntfs {}: resident attribute {:#x} value ({len} bytes at {off}) overruns it",
                self.name,
                a.ty
            ));
        }
        self.buf
            .get(a.at + off..a.at + off + len)
            .ok_or_else(|| corrupt!("ntfs {}: attribute value out of the record", self.name))
    }

    /// The attributes of type `ty`.
    pub fn attrs(&self, ty: u32) -> impl Iterator<Item = &Attr> + '_ {
        self.attrs.iter().filter(move |a| a.ty == ty)
    }

    /// True when one of the record's $FILE_NAME attributes is `name` (ASCII).
    pub fn has_name(&self, name: &str) -> bool {
        self.attrs(FILE_NAME).any(|a| {
            let Ok(v) = self.value(a) else { return false };
            let n = usize::from(v.get(0x40).copied().unwrap_or(0));
            let Some(utf16) = v.get(0x42..0x42 + 2 * n) else {
                return false;
            };
            n == name.len()
                && utf16
                    .chunks_exact(2)
                    .zip(name.bytes())
                    .all(|(c, b)| c[0] == b && c[1] == 0)
        })
    }

    /// The unnamed $DATA attribute's first segment (lowest VCN 0): its header fields and
    /// run-list bytes. Compressed, encrypted or sparse data is not read.
    pub fn data(&self) -> Result<(NonResident, &[u8]), MetaError> {
        let mut found = None;
        for a in self.attrs(DATA).filter(|a| a.name_len == 0) {
            if !a.non_resident {
                return Err(corrupt!("ntfs {}: $DATA is resident", self.name));
            }
            if le::u64(&self.buf, a.at + 0x10)? == 0 {
                if found.is_some() {
                    return Err(corrupt!(
                        "ntfs {}: two unnamed $DATA attributes start at VCN 0",
                        self.name
                    ));
                }
                found = Some(*a);
            }
        }
        let a = found.ok_or_else(|| {
            corrupt!(
                "ntfs {}: no unnamed $DATA attribute starting at VCN 0 in its base record",
                self.name
            )
        })?;
        if a.flags & (COMPRESSED | ENCRYPTED | SPARSE) != 0 {
            return Err(MetaError::Unsupported(format!(
                "ntfs {}: $DATA has flags {:#06x} (compressed, encrypted or sparse)",
                self.name, a.flags
            )));
        }
        let b = &self.buf;
        let nr = NonResident {
            lowest_vcn: le::u64(b, a.at + 0x10)?,
            highest_vcn: le::u64(b, a.at + 0x18)?,
            allocated: le::u64(b, a.at + 0x28)?,
            size: le::u64(b, a.at + 0x30)?,
            initialized: le::u64(b, a.at + 0x38)?,
        };
        let pairs = usize::from(le::u16(b, a.at + 0x20)?);
        if pairs < 0x40 || pairs >= a.len {
            return Err(corrupt!(
                "ntfs {}: $DATA run list at {pairs} is outside the attribute's {} bytes",
                self.name,
                a.len
            ));
        }
        let runs = b
            .get(a.at + pairs..a.at + a.len)
            .ok_or_else(|| corrupt!("ntfs {}: $DATA run list out of the record", self.name))?;
        Ok((nr, runs))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a 1 KiB FILE record for `number` with the given attributes (already encoded,
    /// each a multiple of 8 bytes), fixups applied as on disk.
    pub(crate) fn build(number: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut r = vec![0u8; 1024];
        r[0..4].copy_from_slice(b"FILE");
        r[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        r[6..8].copy_from_slice(&3u16.to_le_bytes());
        r[0x14..0x16].copy_from_slice(&0x38u16.to_le_bytes());
        r[0x16..0x18].copy_from_slice(&IN_USE.to_le_bytes());
        r[0x1C..0x20].copy_from_slice(&1024u32.to_le_bytes());
        r[0x2C..0x30].copy_from_slice(&number.to_le_bytes());
        let mut at = 0x38;
        for a in attrs {
            r[at..at + a.len()].copy_from_slice(a);
            at += a.len();
        }
        r[at..at + 4].copy_from_slice(&END.to_le_bytes());
        at += 8;
        r[0x18..0x1C].copy_from_slice(&(at as u32).to_le_bytes());
        protect(&mut r);
        r
    }

    /// Moves the last two bytes of every stride into the update sequence array and stamps
    /// the update sequence number there, as a writer does.
    pub(crate) fn protect(r: &mut [u8]) {
        let usa = usize::from(u16::from_le_bytes([r[4], r[5]]));
        let usn = 7u16;
        r[usa..usa + 2].copy_from_slice(&usn.to_le_bytes());
        for i in 1..=r.len() / STRIDE {
            let at = i * STRIDE - 2;
            let (a, b) = (r[at], r[at + 1]);
            r[usa + 2 * i] = a;
            r[usa + 2 * i + 1] = b;
            r[at..at + 2].copy_from_slice(&usn.to_le_bytes());
        }
    }

    /// A resident $FILE_NAME attribute naming `name`.
    pub(crate) fn file_name(name: &str) -> Vec<u8> {
        let value_len = 0x42 + 2 * name.len();
        let len = (0x18 + value_len).div_ceil(8) * 8;
        let mut a = vec![0u8; len];
        a[0..4].copy_from_slice(&FILE_NAME.to_le_bytes());
        a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        a[0x10..0x14].copy_from_slice(&(value_len as u32).to_le_bytes());
        a[0x14..0x16].copy_from_slice(&0x18u16.to_le_bytes());
        a[0x18 + 0x40] = name.len() as u8;
        for (i, b) in name.bytes().enumerate() {
            a[0x18 + 0x42 + 2 * i] = b;
        }
        a
    }

    #[test]
    fn applies_fixups_and_reads_attributes() {
        let r = build(6, &[file_name("$Bitmap")]);
        assert_eq!(&r[510..512], &7u16.to_le_bytes());
        let rec = Record::parse(r, 6, "$Bitmap").unwrap();
        assert!(rec.has_name("$Bitmap"));
        assert!(!rec.has_name("$Bitmaq"));
        assert!(matches!(rec.data(), Err(MetaError::Corrupt(_))));
    }

    #[test]
    fn rejects_fixup_mismatch() {
        let mut r = build(6, &[]);
        r[1022] ^= 1;
        let err = Record::parse(r, 6, "$Bitmap").err().unwrap();
        assert!(
            matches!(&err, MetaError::Corrupt(m) if m.contains("fixup")),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_magic_number_and_flags() {
        let mut r = build(6, &[]);
        r[0..4].copy_from_slice(b"BAAD");
        assert!(Record::parse(r, 6, "t").is_err());
        assert!(Record::parse(build(5, &[]), 6, "t").is_err());
        let mut r = build(6, &[]);
        r[0x16] = 0;
        assert!(Record::parse(r, 6, "t").is_err());
    }

    #[test]
    fn rejects_attribute_overruns() {
        let mut a = file_name("x");
        a[4..8].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(Record::parse(build(6, &[a]), 6, "t").is_err());
        let mut a = file_name("x");
        a[4..8].copy_from_slice(&0x10u32.to_le_bytes());
        assert!(Record::parse(build(6, &[a]), 6, "t").is_err());
        let mut a = file_name("x");
        a[0x10..0x14].copy_from_slice(&0x400u32.to_le_bytes());
        let rec = Record::parse(build(6, &[a]), 6, "t").unwrap();
        assert!(!rec.has_name("x"));
    }

    #[test]
    fn rejects_usa_that_does_not_fit() {
        let mut r = build(6, &[]);
        r[6..8].copy_from_slice(&5u16.to_le_bytes());
        assert!(Record::parse(r, 6, "t").is_err());
    }
}
