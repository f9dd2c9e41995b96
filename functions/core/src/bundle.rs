//! Reads a bundle zip without unpacking it: the end of central directory record, the central
//! directory, and `app.json` + `stack.json`. The code entries are never read.
//!
//! The reader is written by hand so that it asks its [`ReadAt`] source for a few ranges only
//! (in the Lambda each read is a ranged S3 GET):
//!
//! 1. the tail of the file (at most 22 + 65,535 bytes), where the end record sits;
//! 2. the central directory, once its size and entry count are checked against [`Limits`];
//! 3. for each JSON file, its local header followed by its data (one read, two when the
//!    local header's extra field is much longer than the central one says).
//!
//! Every number in the zip is untrusted: each is checked against the source's length or a
//! limit before it sizes an allocation or a read, and all arithmetic on them is checked.
//! Whatever the bytes, the reader returns [`Problem`]s; it never panics.

use crate::problem::Problem;
use crate::source::ReadAt;

/// The largest `app.json` / `stack.json` (inflated) a bundle may hold.
pub const MAX_JSON_BYTES: u64 = 1024 * 1024;

/// Bounds on what a bundle may make the reader allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest inflated size of `app.json` and of `stack.json`.
    pub max_json_bytes: u64,
    /// Most entries (files, folders) in the zip.
    pub max_entries: usize,
    /// Largest central directory, in bytes.
    pub max_central_directory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_json_bytes: MAX_JSON_BYTES, max_entries: 200_000, max_central_directory: 32 * 1024 * 1024 }
    }
}

/// What the reader found in a bundle: its file list and the two configuration files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The folder every entry sat under ("" when files are at the root, else e.g. "myproj/"); stripped from `files`.
    pub root: String,
    /// Every file (not directory) path relative to the root, '/'-separated, sorted, unique.
    pub files: Vec<String>,
    pub app_json: Vec<u8>,
    pub stack_json: Vec<u8>,
}

impl Bundle {
    /// For a folder on disk (the CLI walks it): files relative to the folder.
    pub fn from_files(mut files: Vec<String>, app_json: Vec<u8>, stack_json: Vec<u8>) -> Bundle {
        files.sort();
        files.dedup();
        Bundle { root: String::new(), files, app_json, stack_json }
    }

    /// True when some file lies under `folder` (a normalized relative path like "src/worker",
    /// no leading "./", no trailing "/"; a trailing "/" is tolerated).
    ///
    /// `""` is the bundle's root: true when the bundle holds any file besides `app.json` and
    /// `stack.json`.
    pub fn has_folder(&self, folder: &str) -> bool {
        let folder = folder.trim_end_matches('/');
        if folder.is_empty() {
            return self.files.iter().any(|f| f != APP_JSON && f != STACK_JSON);
        }
        let prefix = format!("{folder}/");
        // Files are sorted, so every path starting with `prefix` sits at its lower bound.
        let i = self.files.partition_point(|f| f.as_str() < prefix.as_str());
        self.files.get(i).is_some_and(|f| f.starts_with(&prefix))
    }
}

const APP_JSON: &str = "app.json";
const STACK_JSON: &str = "stack.json";
const MACOSX: &str = "__MACOSX";

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const MAX_COMMENT: usize = 0xFFFF;
const LOCATOR_SIG: u32 = 0x0706_4b50;
const LOCATOR_LEN: u64 = 20;
const EOCD64_SIG: u32 = 0x0606_4b50;
const EOCD64_LEN: u64 = 56;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: u32 = 0x0403_4b50;
const LOCAL_LEN: u64 = 30;
/// Extra bytes read with a local header, for a local extra field longer than the central one.
const LOCAL_SLACK: u64 = 256;
/// At most this many unsafe entry names are listed (then one line says how many more).
const MAX_LISTED_NAMES: usize = 20;

const FLAG_ENCRYPTED: u16 = 1;
const FLAG_UTF8: u16 = 1 << 11;
const STORED: u16 = 0;
const DEFLATED: u16 = 8;
const ZIP64_EXTRA: u16 = 0x0001;
const U32_MAX: u64 = 0xFFFF_FFFF;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// A size for messages: "1 MiB", "64 KiB" or "1000 bytes".
fn human(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n % KIB == 0 {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// Reads `len` bytes at `offset`, after checking the range lies in the source.
fn read<S: ReadAt + ?Sized>(src: &S, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    let fits = offset.checked_add(len).is_some_and(|end| end <= src.len());
    if !fits {
        return Err(format!("is truncated or corrupt: it is {} bytes, too short for {len} bytes at offset {offset}", src.len()));
    }
    let n = usize::try_from(len).map_err(|_| format!("is corrupt: a {len}-byte read does not fit in memory"))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let bytes = src.read_at(offset, n).map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() != n {
        return Err(format!("cannot be read: asked for {n} bytes at offset {offset}, got {}", bytes.len()));
    }
    Ok(bytes)
}

/// Where the central directory is, from the end record (and the zip64 one when present).
struct Directory {
    offset: u64,
    size: u64,
    entries: u64,
    zip64: bool,
    /// Where the end records start: the central directory must end at or before it.
    end: u64,
}

/// Finds the end of central directory record in one read of the file's tail.
fn find_directory<S: ReadAt + ?Sized>(src: &S, limits: &Limits) -> Result<Directory, String> {
    const NO_EOCD: &str = "not a zip file (no end of central directory record)";
    let len = src.len();
    if len == 0 {
        return Err("not a zip file (it is empty)".into());
    }
    let tail_len = len.min((EOCD_LEN + MAX_COMMENT) as u64);
    let tail_start = len - tail_len;
    let tail = read(src, tail_start, tail_len)?;
    if tail.len() < EOCD_LEN {
        return Err(NO_EOCD.into());
    }
    // Scan backwards. Prefer a record whose comment ends exactly at the end of the file (a
    // comment may itself hold the signature); else take the last one whose comment fits.
    let mut exact = None;
    let mut loose = None;
    for i in (0..=tail.len() - EOCD_LEN).rev() {
        if u32_at(&tail, i) != Some(EOCD_SIG) {
            continue;
        }
        let comment = u16_at(&tail, i + 20).map_or(usize::MAX, usize::from);
        let end = (i + EOCD_LEN).saturating_add(comment);
        if end == tail.len() {
            exact = Some(i);
            break;
        }
        if end < tail.len() && loose.is_none() {
            loose = Some(i);
        }
    }
    let Some(i) = exact.or(loose) else {
        return Err(NO_EOCD.into());
    };
    let eocd = &tail[i..i + EOCD_LEN];
    let eocd_at = tail_start + i as u64;
    // Bytes at an absolute offset: from the tail when they are in it, else one more read.
    let bytes_at = |at: u64, n: u64| -> Result<Vec<u8>, String> {
        if at >= tail_start {
            let from = usize::try_from(at - tail_start).ok();
            let to = from.and_then(|f| f.checked_add(usize::try_from(n).ok()?));
            if let Some(s) = from.zip(to).and_then(|(f, t)| tail.get(f..t)) {
                return Ok(s.to_vec());
            }
        }
        read(src, at, n)
    };
    let mut dir = Directory {
        entries: u64::from(u16_at(eocd, 10).unwrap_or(0)),
        size: u64::from(u32_at(eocd, 12).unwrap_or(0)),
        offset: u64::from(u32_at(eocd, 16).unwrap_or(0)),
        zip64: false,
        end: eocd_at,
    };
    // A zip64 end record is announced by a locator just before the end record.
    if let Some(locator_at) = eocd_at.checked_sub(LOCATOR_LEN) {
        let locator = bytes_at(locator_at, LOCATOR_LEN)?;
        if u32_at(&locator, 0) == Some(LOCATOR_SIG) {
            const BAD64: &str = "is corrupt: its zip64 end of central directory record is missing or damaged";
            let at = u64_at(&locator, 8).unwrap_or(u64::MAX);
            let fits = at.checked_add(EOCD64_LEN).is_some_and(|end| end <= locator_at);
            if !fits {
                return Err(BAD64.into());
            }
            let rec = bytes_at(at, EOCD64_LEN)?;
            if u32_at(&rec, 0) != Some(EOCD64_SIG) {
                return Err(BAD64.into());
            }
            dir = Directory {
                entries: u64_at(&rec, 32).unwrap_or(0),
                size: u64_at(&rec, 40).unwrap_or(0),
                offset: u64_at(&rec, 48).unwrap_or(0),
                zip64: true,
                end: at,
            };
        }
    }
    if dir.entries > limits.max_entries as u64 {
        return Err(format!("holds {} entries, over the limit of {}", dir.entries, limits.max_entries));
    }
    if dir.size > limits.max_central_directory {
        return Err(format!(
            "has a central directory of {} bytes, over the {} limit",
            dir.size,
            human(limits.max_central_directory)
        ));
    }
    match dir.offset.checked_add(dir.size) {
        Some(end) if end <= dir.end => {}
        Some(end) if end <= len => {
            return Err(format!(
                "is corrupt: its central directory ({} bytes at offset {}) overlaps the end of central directory record",
                dir.size, dir.offset
            ))
        }
        _ => {
            return Err(format!(
                "is truncated or corrupt: its central directory ({} bytes at offset {}) lies past the end of the file ({len} bytes)",
                dir.size, dir.offset
            ))
        }
    }
    let smallest = dir.entries.checked_mul(CENTRAL_LEN as u64);
    if smallest.is_none_or(|s| s > dir.size) {
        return Err(format!("is corrupt: a central directory of {} bytes cannot hold {} entries", dir.size, dir.entries));
    }
    Ok(dir)
}

/// One entry of the central directory.
struct Entry {
    /// The name as the zip has it (decoded), for messages and checks.
    name: String,
    /// Where the raw name bytes sit in the central directory buffer.
    raw_name: std::ops::Range<usize>,
    made_by: u16,
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local_offset: u64,
    external_attrs: u32,
}

impl Entry {
    fn is_symlink(&self) -> bool {
        const UNIX: u16 = 3;
        const S_IFMT: u32 = 0o170000;
        const S_IFLNK: u32 = 0o120000;
        self.made_by >> 8 == UNIX && (self.external_attrs >> 16) & S_IFMT == S_IFLNK
    }
}

/// Parses every central directory entry.
fn parse_directory(cd: &[u8], dir: &Directory, limits: &Limits) -> Result<Vec<Entry>, String> {
    let capacity = usize::try_from(dir.entries).unwrap_or(0).min(cd.len() / CENTRAL_LEN);
    let mut entries = Vec::with_capacity(capacity);
    let mut pos = 0usize;
    while pos < cd.len() && u32_at(cd, pos) == Some(CENTRAL_SIG) {
        let number = entries.len() + 1;
        if entries.len() >= limits.max_entries {
            return Err(format!("holds more than {} entries, over the limit", limits.max_entries));
        }
        let truncated = || format!("is corrupt: central directory entry #{number} is truncated");
        let head = cd.get(pos..pos.checked_add(CENTRAL_LEN).ok_or_else(truncated)?).ok_or_else(truncated)?;
        let field16 = |at| u16_at(head, at).unwrap_or(0);
        let field32 = |at| u32_at(head, at).unwrap_or(0);
        let name_len = usize::from(field16(28));
        let extra_len = usize::from(field16(30));
        let comment_len = usize::from(field16(32));
        let name_at = pos + CENTRAL_LEN;
        let extra_at = name_at + name_len;
        let next = extra_at + extra_len + comment_len;
        if next > cd.len() {
            return Err(truncated());
        }
        let flags = field16(8);
        let raw = &cd[name_at..extra_at];
        let mut entry = Entry {
            name: decode_name(raw, flags),
            raw_name: name_at..extra_at,
            made_by: field16(4),
            flags,
            method: field16(10),
            crc: field32(16),
            compressed: u64::from(field32(20)),
            size: u64::from(field32(24)),
            local_offset: u64::from(field32(42)),
            external_attrs: field32(38),
        };
        if entry.size == U32_MAX || entry.compressed == U32_MAX || entry.local_offset == U32_MAX {
            apply_zip64_extra(&mut entry, &cd[extra_at..extra_at + extra_len])
                .ok_or_else(|| format!("is corrupt: entry {:?} lacks the zip64 extra field its sizes need", entry.name))?;
        }
        entries.push(entry);
        pos = next;
    }
    let found = entries.len() as u64;
    // A zip without zip64 records counts entries in 16 bits; some writers let it wrap.
    let counts_match = found == dir.entries || (!dir.zip64 && found % 0x1_0000 == dir.entries);
    if !counts_match {
        return Err(format!(
            "is corrupt: its end record counts {} entries but its central directory holds {found}",
            dir.entries
        ));
    }
    Ok(entries)
}

/// Replaces the 0xFFFFFFFF sizes and offset by the zip64 extra field's values (in the
/// order the spec gives: size, compressed size, offset). None when the field is missing or short.
fn apply_zip64_extra(entry: &mut Entry, extra: &[u8]) -> Option<()> {
    let mut at = 0usize;
    while at.checked_add(4)? <= extra.len() {
        let id = u16_at(extra, at)?;
        let len = usize::from(u16_at(extra, at + 2)?);
        let data = extra.get(at + 4..(at + 4).checked_add(len)?)?;
        if id == ZIP64_EXTRA {
            let mut field = 0usize;
            let mut next = || {
                let v = u64_at(data, field);
                field += 8;
                v
            };
            if entry.size == U32_MAX {
                entry.size = next()?;
            }
            if entry.compressed == U32_MAX {
                entry.compressed = next()?;
            }
            if entry.local_offset == U32_MAX {
                entry.local_offset = next()?;
            }
            return Some(());
        }
        at = at + 4 + len;
    }
    None
}

/// The characters of code page 437 from 0x80 to 0xFF (the zip default when the UTF-8 flag is unset).
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐\
└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// An entry name as text: UTF-8 when it is (most tools write UTF-8 without setting the flag),
/// else code page 437, unless the UTF-8 flag is set (then invalid bytes show as U+FFFD and the
/// name is reported as unsafe).
fn decode_name(raw: &[u8], flags: u16) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) if flags & FLAG_UTF8 != 0 => String::from_utf8_lossy(raw).into_owned(),
        Err(_) => raw
            .iter()
            .map(|&b| if b < 0x80 { char::from(b) } else { CP437_HIGH.chars().nth(usize::from(b - 0x80)).unwrap_or('\u{fffd}') })
            .collect(),
    }
}

/// Why an entry name is unsafe to unpack, if it is.
fn unsafe_name(entry: &Entry, raw: &[u8]) -> Option<&'static str> {
    let name = entry.name.as_str();
    let b = name.as_bytes();
    if name.is_empty() {
        Some("has an empty name")
    } else if entry.flags & FLAG_UTF8 != 0 && std::str::from_utf8(raw).is_err() {
        Some("is not valid UTF-8")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.contains('\\') {
        Some("contains a backslash")
    } else if name.starts_with('/') || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':') {
        Some("is an absolute path")
    } else if name.split('/').any(|c| c == "..") {
        Some("has a \"..\" path component")
    } else {
        None
    }
}

/// An entry's path with "." and empty components dropped, and whether it is a folder.
fn normalize(name: &str) -> (String, bool) {
    let is_dir = matches!(name.rsplit('/').next(), Some("" | "."));
    let parts: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    (parts.join("/"), is_dir)
}

/// Reads the end-of-central-directory, the central directory, and app.json + stack.json only.
/// `name` is how the bundle is called in errors (e.g. "stack.zip" or "s3://bucket/key").
pub fn read_bundle<S: crate::source::ReadAt + ?Sized>(src: &S, name: &str, limits: &Limits) -> Result<Bundle, Vec<Problem>> {
    let whole = |message: String| vec![Problem::file(name, message)];
    let dir = find_directory(src, limits).map_err(whole)?;
    let cd = read(src, dir.offset, dir.size).map_err(whole)?;
    let entries = parse_directory(&cd, &dir, limits).map_err(whole)?;

    let mut problems = Vec::new();
    let mut unsafe_count = 0usize;
    // (normalized path, is folder, entry index), without __MACOSX/.
    let mut paths: Vec<(String, bool, usize)> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        if let Some(why) = unsafe_name(entry, &cd[entry.raw_name.clone()]) {
            unsafe_count += 1;
            if unsafe_count <= MAX_LISTED_NAMES {
                problems.push(Problem::file(name, format!("entry {:?} {why}", entry.name)));
            }
            continue;
        }
        let (path, is_dir) = normalize(&entry.name);
        if path.is_empty() || path == MACOSX || path.starts_with("__MACOSX/") {
            continue;
        }
        paths.push((path, is_dir, index));
    }
    if unsafe_count > MAX_LISTED_NAMES {
        problems.push(Problem::file(name, format!("and {} more unsafe entry names", unsafe_count - MAX_LISTED_NAMES)));
    }

    let root = common_root(&paths);
    let mut files: Vec<String> = paths
        .iter()
        .filter(|(_, is_dir, _)| !is_dir)
        .filter_map(|(path, _, _)| path.strip_prefix(root.as_str()).map(str::to_string))
        .collect();
    files.sort();
    files.dedup();

    let mut json = |file: &str| -> Vec<u8> {
        let wanted = format!("{root}{file}");
        let found: Vec<&Entry> =
            paths.iter().filter(|(path, is_dir, _)| !is_dir && *path == wanted).map(|&(_, _, i)| &entries[i]).collect();
        match found.as_slice() {
            [] => {
                problems.push(Problem::file(name, format!("{file} is missing at the bundle's root")));
                Vec::new()
            }
            [entry] => match read_json(src, &cd, entry, file, name, limits) {
                Ok(bytes) => bytes,
                Err(p) => {
                    problems.push(p);
                    Vec::new()
                }
            },
            more => {
                problems.push(Problem::file(file, format!("appears {} times in the bundle", more.len())));
                Vec::new()
            }
        }
    };
    let app_json = json(APP_JSON);
    let stack_json = json(STACK_JSON);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Bundle { root, files, app_json, stack_json })
}

/// "X/" when every entry lies under the same top folder X and at least one file does, else "".
fn common_root(paths: &[(String, bool, usize)]) -> String {
    let mut top: Option<&str> = None;
    let mut has_file = false;
    for (path, is_dir, _) in paths {
        let (first, below) = match path.split_once('/') {
            Some((first, _)) => (first, true),
            None => (path.as_str(), false),
        };
        if !below && !is_dir {
            return String::new(); // a file at the top
        }
        has_file |= !is_dir;
        match top {
            None => top = Some(first),
            Some(t) if t == first => {}
            Some(_) => return String::new(),
        }
    }
    match top {
        Some(t) if has_file => format!("{t}/"),
        _ => String::new(),
    }
}

fn method_name(method: u16) -> &'static str {
    match method {
        1 => "shrink",
        2..=5 => "reduce",
        6 => "implode",
        9 => "deflate64",
        12 => "bzip2",
        14 => "lzma",
        93 => "zstd",
        95 => "xz",
        96 => "jpeg",
        97 => "wavpack",
        98 => "ppmd",
        99 => "AES encryption",
        _ => "unknown",
    }
}

/// Reads one JSON file: its local header and data, inflated and CRC-checked.
fn read_json<S: ReadAt + ?Sized>(
    src: &S,
    cd: &[u8],
    entry: &Entry,
    file: &str,
    bundle: &str,
    limits: &Limits,
) -> Result<Vec<u8>, Problem> {
    let bad = |message: String| Problem::file(file, message);
    if entry.flags & FLAG_ENCRYPTED != 0 {
        return Err(bad("is encrypted; stackdrop cannot read encrypted files".into()));
    }
    if entry.method != STORED && entry.method != DEFLATED {
        return Err(bad(format!(
            "uses compression method {} ({}); only stored (0) and deflate (8) are supported",
            entry.method,
            method_name(entry.method)
        )));
    }
    if entry.is_symlink() {
        return Err(bad("is a symbolic link; it must be a regular file".into()));
    }
    let max = limits.max_json_bytes;
    if entry.size > max {
        return Err(bad(format!("is {} bytes, over the {} limit", entry.size, human(max))));
    }
    if entry.method == STORED && entry.compressed != entry.size {
        return Err(bad(format!(
            "is corrupt: it is stored ({} bytes) but its size says {} bytes",
            entry.compressed, entry.size
        )));
    }
    // Deflate never needs much more room than the data itself (stored blocks add 5 bytes a
    // 64 KiB block); this bound keeps a lying compressed size from sizing a huge read.
    let max_compressed = max.saturating_add(max / 4).saturating_add(4096);
    if entry.compressed > max_compressed {
        return Err(bad(format!(
            "is corrupt: its compressed size ({} bytes) is too large for the {} limit",
            entry.compressed,
            human(max)
        )));
    }

    let len = src.len();
    let offset = entry.local_offset;
    let header_fits = offset.checked_add(LOCAL_LEN).is_some_and(|end| end <= len);
    if !header_fits {
        return Err(bad(format!("is corrupt: its local header (offset {offset}) lies past the end of the bundle")));
    }
    // One read for the header, the name, the extra field and the data, with some slack for a
    // local extra field longer than the central one.
    let raw_name = &cd[entry.raw_name.clone()];
    let want = LOCAL_LEN
        .saturating_add(raw_name.len() as u64)
        .saturating_add(entry.compressed)
        .saturating_add(LOCAL_SLACK)
        .min(len - offset);
    let whole = |m: String| Problem::file(bundle, m);
    let head = read(src, offset, want).map_err(whole)?;
    if u32_at(&head, 0) != Some(LOCAL_SIG) {
        return Err(bad(format!("is corrupt: there is no local header at offset {offset}")));
    }
    let name_len = u64::from(u16_at(&head, 26).unwrap_or(0));
    let extra_len = u64::from(u16_at(&head, 28).unwrap_or(0));
    if name_len != raw_name.len() as u64 {
        return Err(bad("is corrupt: its local header names another file".into()));
    }
    match head.get(30..30 + raw_name.len()) {
        None => return Err(bad("is truncated: its local header lies past the end of the bundle".into())),
        Some(local_name) if local_name != raw_name => {
            return Err(bad("is corrupt: its local header names another file".into()))
        }
        Some(_) => {}
    }
    let data_from = LOCAL_LEN + name_len + extra_len; // relative to offset; no overflow: all < 2^17
    let data_to = data_from.checked_add(entry.compressed);
    let data_end = data_to.and_then(|t| offset.checked_add(t));
    if data_end.is_none_or(|end| end > len) {
        return Err(bad("is truncated: its data lies past the end of the bundle".into()));
    }
    let data_to = data_to.unwrap_or(0);
    let fetched;
    let data: &[u8] = match (usize::try_from(data_from), usize::try_from(data_to)) {
        (Ok(from), Ok(to)) if to <= head.len() => &head[from..to],
        _ => {
            fetched = read(src, offset + data_from, entry.compressed).map_err(whole)?;
            &fetched
        }
    };

    // entry.size <= max_json_bytes, so this cap bounds what inflation may allocate.
    let cap = usize::try_from(entry.size).map_err(|_| bad(format!("is {} bytes, over the {} limit", entry.size, human(max))))?;
    let bytes = if entry.method == STORED {
        data.to_vec()
    } else {
        match miniz_oxide::inflate::decompress_to_vec_with_limit(data, cap) {
            Ok(out) => out,
            Err(e) if e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput => {
                return Err(bad(format!("is corrupt: it inflates to more than the {} bytes its header says", entry.size)));
            }
            Err(_) => return Err(bad("is corrupt: its deflate data is damaged or truncated".into())),
        }
    };
    if bytes.len() as u64 != entry.size {
        return Err(bad(format!("is corrupt: it inflates to {} bytes but its header says {}", bytes.len(), entry.size)));
    }
    let crc = crc32fast::hash(&bytes);
    if crc != entry.crc {
        return Err(bad(format!("is corrupt: its CRC-32 is {crc:08x} but the zip says {:08x}", entry.crc)));
    }
    Ok(bytes)
}
