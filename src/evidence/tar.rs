//! A minimal POSIX ustar writer and reader: regular files only, what an evidence package
//! needs and nothing more (no links, no devices, no extended headers). The format is the
//! one every `tar` reads (`tar -xf package.tar` unpacks it), so a package can be checked
//! with `sha256sum` and no sallyport at all.
//!
//! The reader is streaming (a member is handed over as a bounded reader, never read whole)
//! and refuses what it does not write: a bad header checksum, a member that is not a
//! regular file, a size field that does not parse, an archive that ends early.

use std::io::{self, Read, Write};

/// The block size of the format.
pub const BLOCK: usize = 512;

/// What can be wrong with an archive.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("reading the package: {0}")]
    Io(#[from] io::Error),
    #[error("the package is not a tar archive: {0}")]
    Format(String),
    #[error(
        "the member name {0:?} does not fit a ustar header (at most 255 bytes, split at a '/')"
    )]
    NameTooLong(String),
}

/// Splits `name` into ustar's `prefix` (up to 155 bytes) and `name` (up to 100).
fn split_name(name: &str) -> Result<(&str, &str), TarError> {
    if name.len() <= 100 {
        return Ok(("", name));
    }
    let too_long = || TarError::NameTooLong(name.to_string());
    for (i, _) in name.match_indices('/') {
        let (prefix, rest) = (&name[..i], &name[i + 1..]);
        if prefix.len() <= 155 && !rest.is_empty() && rest.len() <= 100 {
            return Ok((prefix, rest));
        }
    }
    Err(too_long())
}

/// Writes `value` as zero-padded octal in `field`, leaving the last byte NUL.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    let bytes = text.as_bytes();
    let start = bytes.len().saturating_sub(width);
    field[..width].copy_from_slice(&bytes[start..]);
    field[width] = 0;
}

/// The header block of a regular file `name` of `size` bytes, modified at `mtime` (Unix
/// seconds), mode 0644.
pub fn header(name: &str, size: u64, mtime: u64) -> Result<[u8; BLOCK], TarError> {
    let (prefix, short) = split_name(name)?;
    if size >= 1 << 33 {
        return Err(TarError::Format(format!(
            "member {name} is {size} bytes: ustar holds at most 8 GiB per file"
        )));
    }
    let mut h = [0u8; BLOCK];
    h[..short.len()].copy_from_slice(short.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as eight spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    Ok(h)
}

/// Zero bytes that pad a member of `size` bytes to a whole block.
fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

/// Writes members one after the other, then the end of the archive.
pub struct Writer<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> Writer<W> {
    /// Every member gets `mtime` (the package's build time) as its modification time.
    pub fn new(out: W, mtime: u64) -> Writer<W> {
        Writer { out, mtime }
    }

    /// A member holding `data`.
    pub fn bytes(&mut self, name: &str, data: &[u8]) -> Result<(), TarError> {
        self.stream(name, data.len() as u64, &mut &data[..])
    }

    /// A member of exactly `size` bytes read from `from`; an error when `from` ends before
    /// (a file that shrank since it was measured).
    pub fn stream(&mut self, name: &str, size: u64, from: &mut impl Read) -> Result<(), TarError> {
        self.out.write_all(&header(name, size, self.mtime)?)?;
        let copied = io::copy(&mut from.take(size), &mut self.out)?;
        if copied != size {
            return Err(TarError::Format(format!(
                "member {name}: {copied} bytes read where {size} were expected (the file changed)"
            )));
        }
        self.out.write_all(&[0u8; BLOCK][..padding(size)])?;
        Ok(())
    }

    /// The two zero blocks that end an archive; returns the output.
    pub fn finish(mut self) -> Result<W, TarError> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads `buf.len()` bytes, or returns `false` at a clean end of input (nothing read).
fn read_block(r: &mut impl Read, buf: &mut [u8; BLOCK]) -> Result<bool, TarError> {
    let mut got = 0;
    while got < BLOCK {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(TarError::Format(
                    "the archive ends in the middle of a block".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// A NUL-terminated header text field.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// A NUL- or space-terminated octal header field.
fn parse_octal(field: &[u8], what: &str) -> Result<u64, TarError> {
    let s = text(field);
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    u64::from_str_radix(s, 8)
        .map_err(|_| TarError::Format(format!("the {what} field {s:?} is not octal")))
}

/// One member's header as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub size: u64,
}

fn parse_header(h: &[u8; BLOCK]) -> Result<Member, TarError> {
    let stored = parse_octal(&h[148..156], "checksum")?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(*b)
            }
        })
        .sum();
    let short = text(&h[..100]);
    if stored != sum {
        return Err(TarError::Format(format!(
            "the header of member {short:?} has a bad checksum"
        )));
    }
    let prefix = text(&h[345..500]);
    let name = if prefix.is_empty() {
        short
    } else {
        format!("{prefix}/{short}")
    };
    if !matches!(h[156], b'0' | 0) {
        return Err(TarError::Format(format!(
            "member {name:?} is not a regular file (type {:?})",
            char::from(h[156])
        )));
    }
    let size = parse_octal(&h[124..136], "size")?;
    Ok(Member { name, size })
}

/// Calls `each` with every member and a reader of exactly its bytes (what `each` leaves
/// unread is skipped), in archive order, until the end of the archive.
pub fn for_each<R: Read>(
    mut input: R,
    mut each: impl FnMut(&Member, &mut io::Take<&mut R>) -> Result<(), TarError>,
) -> Result<(), TarError> {
    let mut block = [0u8; BLOCK];
    loop {
        if !read_block(&mut input, &mut block)? {
            return Err(TarError::Format(
                "the archive ends without its end marker".into(),
            ));
        }
        if block.iter().all(|b| *b == 0) {
            return Ok(());
        }
        let member = parse_header(&block)?;
        let mut body = (&mut input).take(member.size);
        each(&member, &mut body)?;
        io::copy(&mut body, &mut io::sink())?;
        if body.limit() != 0 {
            return Err(TarError::Format(format!(
                "member {} is cut short",
                member.name
            )));
        }
        let mut pad = vec![0u8; padding(member.size)];
        input.read_exact(&mut pad).map_err(|_| {
            TarError::Format(format!("the archive ends inside member {}", member.name))
        })?;
    }
}

/// Every member and its bytes, in archive order: for small archives and tests.
pub fn read_all(input: impl Read) -> Result<Vec<(String, Vec<u8>)>, TarError> {
    let mut out = Vec::new();
    for_each(input, |m, body| {
        let mut data = Vec::new();
        body.read_to_end(&mut data)?;
        out.push((m.name.clone(), data));
        Ok(())
    })?;
    Ok(out)
}

/// An archive of `members`, in that order: for tests that rebuild a package.
pub fn write_all(members: &[(String, Vec<u8>)], mtime: u64) -> Result<Vec<u8>, TarError> {
    let mut w = Writer::new(Vec::new(), mtime);
    for (name, data) in members {
        w.bytes(name, data)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_with_long_names_and_odd_sizes() {
        let long = format!("sessions/{}/{}.wav", "s".repeat(60), "r".repeat(60));
        let members = vec![
            ("manifest.json".to_string(), b"{}".to_vec()),
            (long.clone(), vec![7u8; 1500]),
            ("empty".to_string(), Vec::new()),
            ("exact".to_string(), vec![1u8; 512]),
        ];
        let tar = write_all(&members, 1_700_000_000).unwrap();
        assert_eq!(tar.len() % BLOCK, 0);
        assert_eq!(read_all(&tar[..]).unwrap(), members);
    }

    #[test]
    fn the_system_tar_reads_what_the_writer_writes() {
        let long = format!("sessions/{}/{}.wav", "s".repeat(60), "r".repeat(60));
        let members = vec![
            ("manifest.json".to_string(), b"{}".to_vec()),
            (long.clone(), vec![7u8; 1500]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.tar");
        std::fs::write(&file, write_all(&members, 1_700_000_000).unwrap()).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&file)
            .arg("-C")
            .arg(dir.path())
            .output();
        match out {
            Ok(o) => {
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                for (name, data) in &members {
                    assert_eq!(&std::fs::read(dir.path().join(name)).unwrap(), data);
                }
            }
            Err(e) => eprintln!("no system tar ({e}): only the header is checked"),
        }
        // The header against the definition: magic, checksum, octal size.
        let h = header("a/b.txt", 3, 0).unwrap();
        assert_eq!(&h[257..263], b"ustar\0");
        let stored = parse_octal(&h[148..156], "checksum").unwrap();
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        assert_eq!(stored, sum);
        assert_eq!(&h[124..136], b"00000000003\0");
    }

    #[test]
    fn damaged_archives_are_refused_not_misread() {
        let tar = write_all(&[("a".into(), vec![1, 2, 3])], 0).unwrap();
        let mut bad = tar.clone();
        bad[0] = b'b';
        assert!(matches!(read_all(&bad[..]), Err(TarError::Format(_))));
        assert!(matches!(read_all(&tar[..700]), Err(TarError::Format(_))));
        assert!(matches!(read_all(&tar[..1024]), Err(TarError::Format(_))));
        let mut link = header("l", 0, 0).unwrap();
        link[156] = b'2';
        link[148..156].copy_from_slice(b"        ");
        let sum: u64 = link.iter().map(|b| u64::from(*b)).sum();
        octal(&mut link[148..155], sum);
        let mut archive = link.to_vec();
        archive.extend([0u8; 1024]);
        let e = read_all(&archive[..]).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(matches!(
            split_name(&"x".repeat(300)),
            Err(TarError::NameTooLong(_))
        ));
    }
}
