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
        Limits {
            max_json_bytes: MAX_JSON_BYTES,
            max_entries: 200_000,
            max_central_directory: 32 * 1024 * 1024,
        }
    }
}

/// What the reader found in a bundle: its file list and the two configuration files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The folder every entry sat under ("" when files are at the root, else e.g. "myproj/"); stripped from `files`.
    pub root: String,
    /// Every file (not directory) path relative to the root, '/'-separated, sorted, unique.
    pub files: Vec<String>,
    /// Every file entry as extraction writes it: its path relative to the root and its
    /// inflated size from the central directory, in zip order, duplicates included.
    pub sizes: Vec<(String, u64)>,
    pub app_json: Vec<u8>,
    pub stack_json: Vec<u8>,
}

impl Bundle {
    /// For a folder on disk (the CLI walks it): files relative to the folder, sizes unknown (0).
    pub fn from_files(files: Vec<String>, app_json: Vec<u8>, stack_json: Vec<u8>) -> Bundle {
        let sized = files.into_iter().map(|f| (f, 0)).collect();
        Bundle::from_sized_files(sized, app_json, stack_json)
    }

    /// For a folder on disk: files relative to the folder, with their sizes in bytes.
    pub fn from_sized_files(
        sizes: Vec<(String, u64)>,
        app_json: Vec<u8>,
        stack_json: Vec<u8>,
    ) -> Bundle {
        let mut files: Vec<String> = sizes.iter().map(|(f, _)| f.clone()).collect();
        files.sort();
        files.dedup();
        Bundle {
            root: String::new(),
            files,
            sizes,
            app_json,
            stack_json,
        }
    }

    /// The bytes extracting `folder` writes (the sum of its file entries' inflated sizes, as
    /// the central directory gives them; `""` is the whole bundle): the bound the instance's
    /// extractor enforces.
    pub fn folder_bytes(&self, folder: &str) -> u64 {
        let folder = folder.trim_end_matches('/');
        let prefix = format!("{folder}/");
        self.sizes
            .iter()
            .filter(|(f, _)| folder.is_empty() || f.starts_with(&prefix))
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
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
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// Reads `len` bytes at `offset`, after checking the range lies in the source.
fn read<S: ReadAt + ?Sized>(src: &S, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    let fits = offset.checked_add(len).is_some_and(|end| end <= src.len());
    if !fits {
        return Err(format!(
            "is truncated or corrupt: it is {} bytes, too short for {len} bytes at offset {offset}",
            src.len()
        ));
    }
    let n = usize::try_from(len)
        .map_err(|_| format!("is corrupt: a {len}-byte read does not fit in memory"))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let bytes = src
        .read_at(offset, n)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() != n {
        return Err(format!(
            "cannot be read: asked for {n} bytes at offset {offset}, got {}",
            bytes.len()
        ));
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
    // A zip64 end record is announced by a locator just before the end record. Those four
    // bytes may also end a file name by chance: when the record they point to is no zip64 end
    // record and the end record needs none (no field saturated), the locator is ignored.
    let saturated = dir.entries == 0xFFFF || dir.size == U32_MAX || dir.offset == U32_MAX;
    if let Some(locator_at) = eocd_at.checked_sub(LOCATOR_LEN) {
        let locator = bytes_at(locator_at, LOCATOR_LEN)?;
        if u32_at(&locator, 0) == Some(LOCATOR_SIG) {
            let at = u64_at(&locator, 8).filter(|at| {
                at.checked_add(EOCD64_LEN)
                    .is_some_and(|end| end <= locator_at)
            });
            let rec = match at {
                Some(at) => Some((at, bytes_at(at, EOCD64_LEN)?)),
                None => None,
            };
            match rec {
                Some((at, rec)) if u32_at(&rec, 0) == Some(EOCD64_SIG) => {
                    dir = Directory {
                        entries: u64_at(&rec, 32).unwrap_or(0),
                        size: u64_at(&rec, 40).unwrap_or(0),
                        offset: u64_at(&rec, 48).unwrap_or(0),
                        zip64: true,
                        end: at,
                    };
                }
                _ if saturated => return Err(
                    "is corrupt: its zip64 end of central directory record is missing or damaged"
                        .into(),
                ),
                _ => {}
            }
        }
    }
    if dir.entries > limits.max_entries as u64 {
        return Err(format!(
            "holds {} entries, over the limit of {}",
            dir.entries, limits.max_entries
        ));
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
                "is truncated or corrupt: its central directory ({} bytes at offset {}) runs into its end record (at offset {})",
                dir.size, dir.offset, dir.end
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
        return Err(format!(
            "is corrupt: a central directory of {} bytes cannot hold {} entries",
            dir.size, dir.entries
        ));
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
    let capacity = usize::try_from(dir.entries)
        .unwrap_or(0)
        .min(cd.len() / CENTRAL_LEN);
    let mut entries = Vec::with_capacity(capacity);
    let mut pos = 0usize;
    while pos < cd.len() && u32_at(cd, pos) == Some(CENTRAL_SIG) {
        let number = entries.len() + 1;
        if entries.len() >= limits.max_entries {
            return Err(format!(
                "holds more than {} entries, over the limit",
                limits.max_entries
            ));
        }
        let truncated = || format!("is corrupt: central directory entry #{number} is truncated");
        let head = cd
            .get(pos..pos.checked_add(CENTRAL_LEN).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
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
            apply_zip64_extra(&mut entry, &cd[extra_at..extra_at + extra_len]).ok_or_else(
                || {
                    format!(
                        "is corrupt: entry {:?} lacks the zip64 extra field its sizes need",
                        entry.name
                    )
                },
            )?;
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
            .map(|&b| {
                if b < 0x80 {
                    char::from(b)
                } else {
                    CP437_HIGH
                        .chars()
                        .nth(usize::from(b - 0x80))
                        .unwrap_or('\u{fffd}')
                }
            })
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
    } else if name.starts_with('/') || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
    {
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
    let parts: Vec<&str> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    (parts.join("/"), is_dir)
}

/// Reads the end-of-central-directory, the central directory, and app.json + stack.json only.
/// `name` is how the bundle is called in errors (e.g. "stack.zip" or "s3://bucket/key").
pub fn read_bundle<S: crate::source::ReadAt + ?Sized>(
    src: &S,
    name: &str,
    limits: &Limits,
) -> Result<Bundle, Vec<Problem>> {
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
        problems.push(Problem::file(
            name,
            format!(
                "and {} more unsafe entry names",
                unsafe_count - MAX_LISTED_NAMES
            ),
        ));
    }

    problems.extend(file_folder_conflicts(&paths).into_iter().map(|file| {
        Problem::file(
            name,
            format!("entry {file:?} is a file, and a folder of other entries"),
        )
    }));

    let root = common_root(&paths);
    problems.extend(
        unpackable(&paths, &entries, &root)
            .into_iter()
            .map(|why| Problem::file(name, why)),
    );
    let mut files: Vec<String> = paths
        .iter()
        .filter(|(_, is_dir, _)| !is_dir)
        .filter_map(|(path, _, _)| path.strip_prefix(root.as_str()).map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    let sizes: Vec<(String, u64)> = paths
        .iter()
        .filter(|(_, is_dir, _)| !is_dir)
        .filter_map(|(path, _, i)| {
            let path = path.strip_prefix(root.as_str())?;
            Some((path.to_string(), entries[*i].size))
        })
        .collect();

    let mut json = |file: &str| -> Vec<u8> {
        let wanted = format!("{root}{file}");
        let found: Vec<&Entry> = paths
            .iter()
            .filter(|(path, is_dir, _)| !is_dir && *path == wanted)
            .map(|&(_, _, i)| &entries[i])
            .collect();
        match found.as_slice() {
            [] => {
                problems.push(Problem::file(
                    name,
                    format!("{file} is missing at the bundle's root"),
                ));
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
                problems.push(Problem::file(
                    file,
                    format!("appears {} times in the bundle", more.len()),
                ));
                Vec::new()
            }
        }
    };
    let app_json = json(APP_JSON);
    let stack_json = json(STACK_JSON);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Bundle {
        root,
        files,
        sizes,
        app_json,
        stack_json,
    })
}

/// Code files the instance could not unpack as they are (encrypted, or compressed with a method
/// other than stored or deflate), named as the instance's extractor names them; app.json and
/// stack.json have their own, more precise messages. At most [`MAX_LISTED_NAMES`], in zip order.
fn unpackable(paths: &[(String, bool, usize)], entries: &[Entry], root: &str) -> Vec<String> {
    let json = [format!("{root}{APP_JSON}"), format!("{root}{STACK_JSON}")];
    let why = |entry: &Entry| {
        if entry.flags & FLAG_ENCRYPTED != 0 {
            Some("is encrypted; stackdrop cannot unpack encrypted files".to_string())
        } else if entry.method != STORED && entry.method != DEFLATED {
            Some(format!(
                "uses compression method {} ({}); only stored (0) and deflate (8) are supported",
                entry.method,
                method_name(entry.method)
            ))
        } else {
            None
        }
    };
    let found: Vec<String> = paths
        .iter()
        .filter(|(path, is_dir, _)| !is_dir && !json.contains(path))
        .filter_map(|&(_, _, i)| Some(format!("entry {:?} {}", entries[i].name, why(&entries[i])?)))
        .collect();
    let more = found.len().saturating_sub(MAX_LISTED_NAMES);
    let mut listed: Vec<String> = found.into_iter().take(MAX_LISTED_NAMES).collect();
    if more > 0 {
        listed.push(format!("and {more} more entries that cannot be unpacked"));
    }
    listed
}

/// Files that other entries need as a folder ("a" and "a/b"): no file system can hold both, so
/// no extraction could. At most [`MAX_LISTED_NAMES`], sorted.
fn file_folder_conflicts(paths: &[(String, bool, usize)]) -> Vec<String> {
    let files: std::collections::BTreeSet<&str> = paths
        .iter()
        .filter(|(_, is_dir, _)| !is_dir)
        .map(|(p, _, _)| p.as_str())
        .collect();
    let mut conflicts = std::collections::BTreeSet::new();
    for (path, is_dir, _) in paths {
        let folders = path.match_indices('/').map(|(i, _)| &path[..i]);
        for folder in folders.chain(is_dir.then_some(path.as_str())) {
            if files.contains(folder) {
                conflicts.insert(folder.to_string());
            }
        }
    }
    conflicts.into_iter().take(MAX_LISTED_NAMES).collect()
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
        return Err(bad(
            "is encrypted; stackdrop cannot read encrypted files".into()
        ));
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
        return Err(bad(format!(
            "is {} bytes, over the {} limit",
            entry.size,
            human(max)
        )));
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
        return Err(bad(format!(
            "is corrupt: its local header (offset {offset}) lies past the end of the bundle"
        )));
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
        return Err(bad(format!(
            "is corrupt: there is no local header at offset {offset}"
        )));
    }
    let name_len = u64::from(u16_at(&head, 26).unwrap_or(0));
    let extra_len = u64::from(u16_at(&head, 28).unwrap_or(0));
    if name_len != raw_name.len() as u64 {
        return Err(bad("is corrupt: its local header names another file".into()));
    }
    match head.get(30..30 + raw_name.len()) {
        None => {
            return Err(bad(
                "is truncated: its local header lies past the end of the bundle".into(),
            ))
        }
        Some(local_name) if local_name != raw_name => {
            return Err(bad("is corrupt: its local header names another file".into()))
        }
        Some(_) => {}
    }
    let data_from = LOCAL_LEN + name_len + extra_len; // relative to offset; no overflow: all < 2^17
    let data_to = data_from.checked_add(entry.compressed);
    let data_end = data_to.and_then(|t| offset.checked_add(t));
    if data_end.is_none_or(|end| end > len) {
        return Err(bad(
            "is truncated: its data lies past the end of the bundle".into(),
        ));
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
    let cap = usize::try_from(entry.size).map_err(|_| {
        bad(format!(
            "is {} bytes, over the {} limit",
            entry.size,
            human(max)
        ))
    })?;
    let bytes = if entry.method == STORED {
        data.to_vec()
    } else {
        match miniz_oxide::inflate::decompress_to_vec_with_limit(data, cap) {
            Ok(out) => out,
            Err(e) if e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput => {
                return Err(bad(format!(
                    "is corrupt: it inflates to more than the {} bytes its header says",
                    entry.size
                )));
            }
            Err(_) => {
                return Err(bad(
                    "is corrupt: its deflate data is damaged or truncated".into()
                ))
            }
        }
    };
    if bytes.len() as u64 != entry.size {
        return Err(bad(format!(
            "is corrupt: it inflates to {} bytes but its header says {}",
            bytes.len(),
            entry.size
        )));
    }
    let crc = crc32fast::hash(&bytes);
    if crc != entry.crc {
        return Err(bad(format!(
            "is corrupt: its CRC-32 is {crc:08x} but the zip says {:08x}",
            entry.crc
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Counting, SourceError};
    use proptest::prelude::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod::{Deflated, Stored};

    const APP: &[u8] = br#"{"name":"my-app"}"#;
    const STACK: &[u8] = br#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"src/worker"}}}"#;

    // ---- zips made with the zip crate ----

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
    }
    use E::{Dir, File};

    fn build_with(
        entries: &[E],
        opts: SimpleFileOptions,
        finish: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>),
    ) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for e in entries {
            match e {
                File(n, d) => {
                    w.start_file(*n, opts).unwrap();
                    w.write_all(d).unwrap();
                }
                Dir(n) => w.add_directory(*n, opts).unwrap(),
            }
        }
        finish(&mut w);
        w.finish().unwrap().into_inner()
    }

    fn build(entries: &[E], method: zip::CompressionMethod) -> Vec<u8> {
        build_with(
            entries,
            SimpleFileOptions::default().compression_method(method),
            |_| {},
        )
    }

    fn simple(method: zip::CompressionMethod) -> Vec<u8> {
        build(
            &[
                File("app.json", APP),
                Dir("src/"),
                Dir("src/worker/"),
                File("src/worker/main.py", b"print(1)\n"),
                File("stack.json", STACK),
            ],
            method,
        )
    }

    fn read(bytes: &[u8]) -> Result<Bundle, Vec<Problem>> {
        read_bundle(bytes, "stack.zip", &Limits::default())
    }

    fn errors(bytes: &[u8]) -> Vec<String> {
        read(bytes)
            .expect_err("the bundle should be rejected")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Bytes that do not compress (a xorshift stream).
    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    // ---- zips made by hand, for what the zip crate will not write ----

    #[derive(Clone)]
    struct Raw {
        name: Vec<u8>,
        local_name: Option<Vec<u8>>,
        data: Vec<u8>,
        method: u16,
        flags: u16,
        crc: u32,
        size: u64,
        made_by: u16,
        attrs: u32,
        zip64: bool,
        zip64_id: u16,
        comment: Vec<u8>,
    }

    impl Raw {
        fn stored(name: &str, data: &[u8]) -> Raw {
            Raw::bytes(name.as_bytes(), data)
        }

        fn bytes(name: &[u8], data: &[u8]) -> Raw {
            Raw {
                name: name.to_vec(),
                local_name: None,
                data: data.to_vec(),
                method: 0,
                flags: 0,
                crc: crc32fast::hash(data),
                size: data.len() as u64,
                made_by: 3 << 8 | 20,
                attrs: 0o100644 << 16,
                zip64: false,
                zip64_id: 1,
                comment: Vec::new(),
            }
        }

        fn deflated(name: &str, data: &[u8]) -> Raw {
            Raw {
                data: miniz_oxide::deflate::compress_to_vec(data, 6),
                method: 8,
                ..Raw::stored(name, data)
            }
        }
    }

    fn raw_zip(entries: &[Raw], zip64_end: bool) -> Vec<u8> {
        fn p16(v: &mut Vec<u8>, x: u16) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        fn p32(v: &mut Vec<u8>, x: u32) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        fn p64(v: &mut Vec<u8>, x: u64) {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let mut out = Vec::new();
        let mut cd = Vec::new();
        for e in entries {
            let offset = out.len() as u64;
            let csize = e.data.len() as u64;
            let small = |x: u64| if e.zip64 { u32::MAX } else { x as u32 };
            let local_name = e.local_name.as_ref().unwrap_or(&e.name);
            let mut local_extra = Vec::new();
            if e.zip64 {
                p16(&mut local_extra, e.zip64_id);
                p16(&mut local_extra, 16);
                p64(&mut local_extra, e.size);
                p64(&mut local_extra, csize);
            }
            p32(&mut out, LOCAL_SIG);
            p16(&mut out, 45);
            p16(&mut out, e.flags);
            p16(&mut out, e.method);
            p16(&mut out, 0);
            p16(&mut out, 0x21);
            p32(&mut out, e.crc);
            p32(&mut out, small(csize));
            p32(&mut out, small(e.size));
            p16(&mut out, local_name.len() as u16);
            p16(&mut out, local_extra.len() as u16);
            out.extend_from_slice(local_name);
            out.extend_from_slice(&local_extra);
            out.extend_from_slice(&e.data);

            let mut extra = Vec::new();
            if e.zip64 {
                p16(&mut extra, e.zip64_id);
                p16(&mut extra, 24);
                p64(&mut extra, e.size);
                p64(&mut extra, csize);
                p64(&mut extra, offset);
            }
            p32(&mut cd, CENTRAL_SIG);
            p16(&mut cd, e.made_by);
            p16(&mut cd, 45);
            p16(&mut cd, e.flags);
            p16(&mut cd, e.method);
            p16(&mut cd, 0);
            p16(&mut cd, 0x21);
            p32(&mut cd, e.crc);
            p32(&mut cd, small(csize));
            p32(&mut cd, small(e.size));
            p16(&mut cd, e.name.len() as u16);
            p16(&mut cd, extra.len() as u16);
            p16(&mut cd, e.comment.len() as u16);
            p16(&mut cd, 0);
            p16(&mut cd, 0);
            p32(&mut cd, e.attrs);
            p32(&mut cd, small(offset));
            cd.extend_from_slice(&e.name);
            cd.extend_from_slice(&extra);
            cd.extend_from_slice(&e.comment);
        }
        let cd_offset = out.len() as u64;
        let cd_size = cd.len() as u64;
        out.extend_from_slice(&cd);
        let n = entries.len() as u64;
        if zip64_end {
            let eocd64_at = out.len() as u64;
            p32(&mut out, EOCD64_SIG);
            p64(&mut out, 44);
            p16(&mut out, 45);
            p16(&mut out, 45);
            p32(&mut out, 0);
            p32(&mut out, 0);
            p64(&mut out, n);
            p64(&mut out, n);
            p64(&mut out, cd_size);
            p64(&mut out, cd_offset);
            p32(&mut out, LOCATOR_SIG);
            p32(&mut out, 0);
            p64(&mut out, eocd64_at);
            p32(&mut out, 1);
        }
        p32(&mut out, EOCD_SIG);
        p16(&mut out, 0);
        p16(&mut out, 0);
        let (n16, size32, off32) = if zip64_end {
            (u16::MAX, u32::MAX, u32::MAX)
        } else {
            (n as u16, cd_size as u32, cd_offset as u32)
        };
        p16(&mut out, n16);
        p16(&mut out, n16);
        p32(&mut out, size32);
        p32(&mut out, off32);
        p16(&mut out, 0);
        out
    }

    fn with_json(mut more: Vec<Raw>) -> Vec<Raw> {
        more.insert(0, Raw::stored("app.json", APP));
        more.push(Raw::stored("stack.json", STACK));
        more
    }

    /// The offset of the end of central directory record in a zip without comment.
    fn eocd_at(zip: &[u8]) -> usize {
        zip.len() - EOCD_LEN
    }

    /// The offset of `name`'s central directory entry.
    fn central_at(zip: &[u8], name: &str) -> usize {
        (0..zip.len() - CENTRAL_LEN)
            .find(|&i| {
                u32_at(zip, i) == Some(CENTRAL_SIG)
                    && zip[i + CENTRAL_LEN..].starts_with(name.as_bytes())
            })
            .expect("entry in the central directory")
    }

    fn put32(zip: &mut [u8], at: usize, v: u32) {
        zip[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    // ---- what a good bundle gives ----

    #[test]
    fn reads_a_stored_bundle_at_the_root() {
        let b = read(&simple(Stored)).unwrap();
        assert_eq!(b.root, "");
        assert_eq!(
            b.files,
            strings(&["app.json", "src/worker/main.py", "stack.json"])
        );
        assert_eq!(b.app_json, APP);
        assert_eq!(b.stack_json, STACK);
        assert!(b.has_folder("src/worker"));
        assert!(b.has_folder("src"));
        assert!(!b.has_folder("src/work"));
    }

    #[test]
    fn reads_a_deflated_bundle() {
        let big_stack = format!(r#"{{"name":"jobs","pad":"{}"}}"#, "x".repeat(100_000));
        let zip = build(
            &[
                File("app.json", APP),
                File("stack.json", big_stack.as_bytes()),
                File("w/a", b"a"),
            ],
            Deflated,
        );
        assert!(zip.len() < 10_000, "the JSON should have been deflated");
        let b = read(&zip).unwrap();
        assert_eq!(b.app_json, APP);
        assert_eq!(b.stack_json, big_stack.as_bytes());
        assert_eq!(b.files, strings(&["app.json", "stack.json", "w/a"]));
    }

    #[test]
    fn a_normal_bundle_takes_four_small_reads() {
        let src = Counting::new(simple(Deflated));
        read_bundle(&src, "stack.zip", &Limits::default()).unwrap();
        // tail, central directory, then one read per JSON file (header + data together).
        assert_eq!(src.reads.get(), 4);
    }

    #[test]
    fn code_entries_are_never_read() {
        let big = noise(4 << 20);
        let zip = build(
            &[
                File("app.json", APP),
                File("src/worker/big.bin", &big),
                File("src/worker/more.bin", &big),
                File("stack.json", STACK),
            ],
            Stored,
        );
        assert!(zip.len() > 8 << 20);
        let src = Counting::new(zip);
        let b = read_bundle(&src, "stack.zip", &Limits::default()).unwrap();
        assert_eq!(b.files.len(), 4);
        assert!(src.reads.get() <= 6, "{} reads", src.reads.get());
        // The tail read (64 KiB + 22) is the bulk of it; the code's 8 MiB are never asked for.
        assert!(src.bytes.get() < 70_000, "{} bytes read", src.bytes.get());
    }

    #[test]
    fn a_long_local_extra_field_costs_one_more_read() {
        let mut app = Raw::stored("app.json", APP);
        app.local_name = None;
        let mut zip = raw_zip(&with_json(vec![]), false);
        // Rebuild app.json's local header with a 1000-byte extra field, shifting the rest.
        let extra_len = 1000usize;
        let name_end = 30 + "app.json".len();
        zip[28..30].copy_from_slice(&(extra_len as u16).to_le_bytes());
        zip.splice(name_end..name_end, std::iter::repeat_n(0u8, extra_len));
        let fix = |zip: &mut Vec<u8>, at: usize, delta: usize| {
            let v = u32_at(zip, at).unwrap() + delta as u32;
            put32(zip, at, v);
        };
        let stack_central = central_at(&zip, "stack.json");
        fix(&mut zip, stack_central + 42, extra_len);
        let eocd = eocd_at(&zip);
        fix(&mut zip, eocd + 16, extra_len);
        let src = Counting::new(zip);
        let b = read_bundle(&src, "stack.zip", &Limits::default()).unwrap();
        assert_eq!(b.app_json, APP);
        assert_eq!(src.reads.get(), 5);
    }

    #[test]
    fn strips_a_single_top_folder() {
        let zip = build(
            &[
                Dir("myproj/"),
                File("myproj/app.json", APP),
                File("myproj/stack.json", STACK),
                File("myproj/src/worker/x.py", b""),
            ],
            Deflated,
        );
        let b = read(&zip).unwrap();
        assert_eq!(b.root, "myproj/");
        assert_eq!(
            b.files,
            strings(&["app.json", "src/worker/x.py", "stack.json"])
        );
        assert_eq!(b.stack_json, STACK);
        assert!(b.has_folder("src/worker"));
    }

    #[test]
    fn ignores_macosx_entries() {
        let zip = build(
            &[
                Dir("myproj/"),
                File("myproj/app.json", APP),
                File("myproj/stack.json", STACK),
                Dir("__MACOSX/"),
                Dir("__MACOSX/myproj/"),
                File("__MACOSX/myproj/._app.json", b"\0\x05\x16\x07"),
            ],
            Stored,
        );
        let b = read(&zip).unwrap();
        assert_eq!(b.root, "myproj/");
        assert_eq!(b.files, strings(&["app.json", "stack.json"]));
    }

    #[test]
    fn two_top_folders_make_no_root() {
        let zip = build(
            &[File("a/app.json", APP), File("b/stack.json", STACK)],
            Stored,
        );
        assert_eq!(
            errors(&zip),
            strings(&[
                "stack.zip: app.json is missing at the bundle's root",
                "stack.zip: stack.json is missing at the bundle's root"
            ])
        );
    }

    #[test]
    fn a_file_at_the_top_makes_no_root() {
        let zip = build(
            &[
                File("README.md", b"hi"),
                File("p/app.json", APP),
                File("p/stack.json", STACK),
            ],
            Stored,
        );
        assert_eq!(errors(&zip).len(), 2);
        // A file named like the folder is not below it either.
        let zip = build(&[File("p", b"hi"), File("p2/app.json", APP)], Stored);
        assert_eq!(errors(&zip).len(), 2);
    }

    #[test]
    fn a_root_needs_a_file_below_it() {
        let zip = build(&[Dir("p/"), Dir("p/q/")], Stored);
        assert_eq!(
            errors(&zip),
            strings(&[
                "stack.zip: app.json is missing at the bundle's root",
                "stack.zip: stack.json is missing at the bundle's root"
            ])
        );
    }

    #[test]
    fn json_files_must_be_at_the_root() {
        let zip = build(
            &[File("app.json", APP), File("config/stack.json", STACK)],
            Stored,
        );
        assert_eq!(
            errors(&zip),
            strings(&["stack.zip: stack.json is missing at the bundle's root"])
        );
        // A folder named app.json is no file.
        let zip = build(&[Dir("app.json/"), File("stack.json", STACK)], Stored);
        assert_eq!(
            errors(&zip),
            strings(&["stack.zip: app.json is missing at the bundle's root"])
        );
    }

    #[test]
    fn an_empty_zip_lacks_both_files() {
        let zip = build(&[], Stored);
        assert_eq!(zip.len(), 22);
        assert_eq!(errors(&zip).len(), 2);
    }

    #[test]
    fn dot_and_empty_components_are_dropped() {
        let zip = raw_zip(
            &[
                Raw::stored("./app.json", APP),
                Raw::stored("stack.json", STACK),
                Raw::stored("a//b/./c", b""),
                Raw::stored("./", b""),
            ],
            false,
        );
        let b = read(&zip).unwrap();
        assert_eq!(b.files, strings(&["a/b/c", "app.json", "stack.json"]));
    }

    #[test]
    fn a_file_that_is_also_a_folder_is_rejected() {
        let zip = raw_zip(
            &with_json(vec![
                Raw::stored("src", b"a file"),
                Raw::stored("src/x", b"and a folder"),
                Raw::stored("lib/", b""),
                Raw::stored("./lib", b"a file where a folder entry is"),
            ]),
            false,
        );
        assert_eq!(
            errors(&zip),
            strings(&[
                r#"stack.zip: entry "lib" is a file, and a folder of other entries"#,
                r#"stack.zip: entry "src" is a file, and a folder of other entries"#,
            ])
        );
    }

    #[test]
    fn sizes_count_every_file_entry_as_extraction_writes_it() {
        let zip = raw_zip(
            &with_json(vec![
                Raw::stored("./w/a", b"12345"),
                Raw::stored("w//a", b"123"),
                Raw::stored("w/", b""),
                Raw::stored("x/b", b"1"),
                Raw::stored("__MACOSX/w/._a", b"junk"),
            ]),
            false,
        );
        let b = read(&zip).unwrap();
        assert_eq!(b.folder_bytes("w"), 8, "both copies of w/a are written");
        assert_eq!(b.folder_bytes("w/"), 8);
        assert_eq!(b.folder_bytes("x"), 1);
        assert_eq!(b.folder_bytes("nope"), 0);
        let json = (APP.len() + STACK.len()) as u64;
        assert_eq!(b.folder_bytes(""), 9 + json);
        let b = Bundle::from_sized_files(
            vec![("a/x".into(), 3), ("a/y".into(), 4), ("b".into(), 5)],
            vec![],
            vec![],
        );
        assert_eq!((b.folder_bytes("a"), b.folder_bytes("")), (7, 12));
    }

    #[test]
    fn duplicate_code_files_are_listed_once() {
        let zip = raw_zip(
            &with_json(vec![Raw::stored("w/a", b"1"), Raw::stored("w/a", b"2")]),
            false,
        );
        assert_eq!(
            read(&zip).unwrap().files,
            strings(&["app.json", "stack.json", "w/a"])
        );
    }

    #[test]
    fn a_json_file_twice_is_ambiguous() {
        let zip = raw_zip(&with_json(vec![Raw::stored("app.json", b"{}")]), false);
        assert_eq!(
            errors(&zip),
            strings(&["app.json: appears 2 times in the bundle"])
        );
    }

    #[test]
    fn a_comment_holding_the_signature_is_skipped() {
        let zip = build_with(
            &[File("app.json", APP), File("stack.json", STACK)],
            SimpleFileOptions::default(),
            |w| w.set_comment("tricky PK\u{5}\u{6} comment"),
        );
        assert_eq!(read(&zip).unwrap().app_json, APP);
        // Trailing bytes after the comment are tolerated too.
        let mut padded = zip.clone();
        padded.extend_from_slice(b"junk");
        assert_eq!(read(&padded).unwrap().app_json, APP);
    }

    #[test]
    fn cp437_names_are_decoded() {
        assert_eq!(CP437_HIGH.chars().count(), 128);
        let zip = raw_zip(
            &with_json(vec![Raw::bytes(b"caf\x82/\xe1.txt", b"")]),
            false,
        );
        assert_eq!(
            read(&zip).unwrap().files,
            strings(&["app.json", "café/ß.txt", "stack.json"])
        );
    }

    // ---- zip64 ----

    #[test]
    fn reads_zip64_from_the_zip_crate() {
        let zip = build_with(
            &[
                File("app.json", APP),
                File("stack.json", STACK),
                File("src/worker/a", b"a"),
            ],
            SimpleFileOptions::default()
                .compression_method(Deflated)
                .large_file(true),
            |w| w.set_zip64_comment(Some("")),
        );
        assert!(
            zip.windows(4).any(|w| w == EOCD64_SIG.to_le_bytes()),
            "a zip64 end record"
        );
        let src = Counting::new(zip);
        let b = read_bundle(&src, "stack.zip", &Limits::default()).unwrap();
        assert_eq!(b.app_json, APP);
        assert_eq!(b.stack_json, STACK);
        assert_eq!(src.reads.get(), 4);
    }

    #[test]
    fn reads_zip64_extra_fields() {
        let mut entries = with_json(vec![Raw::deflated("src/worker/a.py", b"print(1)")]);
        entries[0] = Raw::deflated("app.json", APP);
        for e in &mut entries {
            e.zip64 = true;
        }
        let zip = raw_zip(&entries, true);
        let b = read(&zip).unwrap();
        assert_eq!(b.app_json, APP);
        assert_eq!(b.stack_json, STACK);
        assert_eq!(
            b.files,
            strings(&["app.json", "src/worker/a.py", "stack.json"])
        );
    }

    #[test]
    fn a_missing_zip64_extra_field_is_reported() {
        let mut entries = with_json(vec![]);
        entries[1].zip64 = true;
        entries[1].zip64_id = 0x5455;
        assert_eq!(
            errors(&raw_zip(&entries, false)),
            strings(&["stack.zip: is corrupt: entry \"stack.json\" lacks the zip64 extra field its sizes need"])
        );
    }

    #[test]
    fn a_damaged_zip64_end_record_is_reported() {
        let mut zip = raw_zip(&with_json(vec![]), true);
        let at = zip.len() - EOCD_LEN - 20 - 56;
        zip[at] ^= 0xFF;
        assert_eq!(errors(&zip), strings(&["stack.zip: is corrupt: its zip64 end of central directory record is missing or damaged"]));
        let mut zip = raw_zip(&with_json(vec![]), true);
        let locator = zip.len() - EOCD_LEN - 20;
        zip[locator + 8..locator + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(errors(&zip), strings(&["stack.zip: is corrupt: its zip64 end of central directory record is missing or damaged"]));
    }

    #[test]
    fn a_comment_that_looks_like_a_zip64_locator_is_no_zip64() {
        // The last 20 bytes of the central directory are the last entry's comment: "PK\x06\x07",
        // a disk number, an offset (0: a local header sits there; or nonsense) and a disk count.
        for offset in [0u64, u64::MAX / 3] {
            let mut comment = LOCATOR_SIG.to_le_bytes().to_vec();
            comment.extend_from_slice(&[0; 4]);
            comment.extend_from_slice(&offset.to_le_bytes());
            comment.extend_from_slice(&1u32.to_le_bytes());
            let last = Raw {
                comment,
                ..Raw::stored("w/x", b"")
            };
            let zip = raw_zip(
                &[
                    Raw::stored("app.json", APP),
                    Raw::stored("stack.json", STACK),
                    last,
                ],
                false,
            );
            assert_eq!(
                &zip[zip.len() - EOCD_LEN - 20..][..4],
                &LOCATOR_SIG.to_le_bytes()
            );
            assert_eq!(
                read(&zip).unwrap().files,
                strings(&["app.json", "stack.json", "w/x"])
            );
        }
    }

    // ---- unsafe names ----

    #[test]
    fn unsafe_names_are_all_listed() {
        let zip = raw_zip(
            &with_json(vec![
                Raw::stored("../evil", b""),
                Raw::stored("ok/../../evil", b""),
                Raw::stored("/etc/passwd", b""),
                Raw::stored("C:/Windows/x", b""),
                Raw::stored("c:x", b""),
                Raw::stored("a\\b", b""),
                Raw::stored("a\0b", b""),
                Raw::stored("", b""),
                Raw::stored("__MACOSX/../../evil", b""),
                Raw::stored("fine/..x/y..", b""),
            ]),
            false,
        );
        assert_eq!(
            errors(&zip),
            strings(&[
                r#"stack.zip: entry "../evil" has a ".." path component"#,
                r#"stack.zip: entry "ok/../../evil" has a ".." path component"#,
                r#"stack.zip: entry "/etc/passwd" is an absolute path"#,
                r#"stack.zip: entry "C:/Windows/x" is an absolute path"#,
                r#"stack.zip: entry "c:x" is an absolute path"#,
                r#"stack.zip: entry "a\\b" contains a backslash"#,
                r#"stack.zip: entry "a\0b" contains a NUL byte"#,
                r#"stack.zip: entry "" has an empty name"#,
                r#"stack.zip: entry "__MACOSX/../../evil" has a ".." path component"#,
            ])
        );
    }

    #[test]
    fn the_zip_crate_writes_unsafe_names_we_reject() {
        let zip = build(
            &[
                File("app.json", APP),
                File("stack.json", STACK),
                File("../evil", b""),
            ],
            Stored,
        );
        assert_eq!(
            errors(&zip),
            strings(&[r#"stack.zip: entry "../evil" has a ".." path component"#])
        );
    }

    #[test]
    fn invalid_utf8_with_the_utf8_flag_is_unsafe() {
        let mut bad = Raw::bytes(b"a\xffb", b"");
        bad.flags = FLAG_UTF8;
        assert_eq!(
            errors(&raw_zip(&with_json(vec![bad]), false)),
            strings(&["stack.zip: entry \"a\u{fffd}b\" is not valid UTF-8"])
        );
    }

    #[test]
    fn at_most_twenty_unsafe_names_are_listed() {
        let bad: Vec<Raw> = (0..25)
            .map(|i| Raw::stored(&format!("/abs/{i}"), b""))
            .collect();
        let e = errors(&raw_zip(&with_json(bad), false));
        assert_eq!(e.len(), 21);
        assert_eq!(e[0], r#"stack.zip: entry "/abs/0" is an absolute path"#);
        assert_eq!(e[20], "stack.zip: and 5 more unsafe entry names");
    }

    #[test]
    fn unsafe_names_and_missing_files_are_reported_together() {
        let zip = raw_zip(
            &[Raw::stored("../x", b""), Raw::stored("app.json", APP)],
            false,
        );
        assert_eq!(
            errors(&zip),
            strings(&[
                r#"stack.zip: entry "../x" has a ".." path component"#,
                "stack.zip: stack.json is missing at the bundle's root"
            ])
        );
    }

    // ---- the JSON files' own problems ----

    #[test]
    fn a_large_json_is_rejected_before_inflating() {
        // Deflated noise: the zip really is over 2 MiB, and nothing of it is inflated or read.
        let mut big = b"{\"pad\":\"".to_vec();
        big.extend(noise(2 << 20).iter().map(|b| b'a' + b % 26));
        big.truncate((2 << 20) - 2);
        big.extend_from_slice(b"\"}");
        assert_eq!(big.len(), 2 << 20);
        for method in [Deflated, Stored] {
            let zip = build(&[File("app.json", &big), File("stack.json", STACK)], method);
            assert!(zip.len() > 1 << 20);
            let src = Counting::new(zip);
            let e = read_bundle(&src, "stack.zip", &Limits::default()).unwrap_err();
            assert_eq!(
                e,
                vec![Problem::file(
                    "app.json",
                    "is 2097152 bytes, over the 1 MiB limit"
                )]
            );
            assert_eq!(src.reads.get(), 3, "tail, central directory, stack.json");
            assert!(src.bytes.get() < 70_000, "{} bytes read", src.bytes.get());
        }
    }

    #[test]
    fn a_lying_size_does_not_inflate_past_it() {
        // 2 MiB of zeros deflate to a few KiB; the headers say 100 bytes.
        let mut app = Raw::deflated("app.json", &vec![0u8; 2 << 20]);
        app.size = 100;
        let zip = raw_zip(&[app, Raw::stored("stack.json", STACK)], false);
        assert!(zip.len() < 10_000);
        assert_eq!(
            errors(&zip),
            strings(&[
                "app.json: is corrupt: it inflates to more than the 100 bytes its header says"
            ])
        );
    }

    #[test]
    fn a_short_inflation_is_corrupt() {
        let mut app = Raw::deflated("app.json", APP);
        app.size += 1;
        assert_eq!(
            errors(&raw_zip(&[app, Raw::stored("stack.json", STACK)], false)),
            strings(&[&format!(
                "app.json: is corrupt: it inflates to {} bytes but its header says {}",
                APP.len(),
                APP.len() + 1
            )])
        );
    }

    #[test]
    fn a_huge_compressed_size_is_rejected() {
        let mut zip = raw_zip(&with_json(vec![]), false);
        let at = central_at(&zip, "stack.json");
        zip[at + 10] = 8; // deflate
        put32(&mut zip, at + 20, 0x7FFF_FFFF);
        assert_eq!(
            errors(&zip),
            strings(&["stack.json: is corrupt: its compressed size (2147483647 bytes) is too large for the 1 MiB limit"])
        );
    }

    #[test]
    fn a_crc_mismatch_is_reported() {
        let mut zip = simple(Stored);
        let at = zip.windows(APP.len()).position(|w| w == APP).unwrap();
        zip[at + 10] = b'X'; // "my-app" -> "my-Xpp"
        let good = crc32fast::hash(APP);
        let bad = crc32fast::hash(&zip[at..at + APP.len()]);
        assert_eq!(
            errors(&zip),
            strings(&[&format!(
                "app.json: is corrupt: its CRC-32 is {bad:08x} but the zip says {good:08x}"
            )])
        );
    }

    #[test]
    fn damaged_deflate_data_is_reported() {
        let mut app = Raw::deflated("app.json", APP);
        app.data.truncate(3);
        assert_eq!(
            errors(&raw_zip(&[app, Raw::stored("stack.json", STACK)], false)),
            strings(&["app.json: is corrupt: its deflate data is damaged or truncated"])
        );
        let mut empty = Raw::deflated("app.json", APP);
        empty.data.clear();
        assert_eq!(
            errors(&raw_zip(&[empty, Raw::stored("stack.json", STACK)], false)).len(),
            1
        );
    }

    #[test]
    fn an_empty_json_file_reads_as_empty() {
        let zip = raw_zip(
            &[
                Raw::deflated("app.json", b""),
                Raw::stored("stack.json", b""),
            ],
            false,
        );
        let b = read(&zip).unwrap();
        assert!(b.app_json.is_empty() && b.stack_json.is_empty());
    }

    #[test]
    fn unsupported_methods_are_named() {
        let mut app = Raw::stored("app.json", APP);
        app.method = 12;
        let mut stack = Raw::stored("stack.json", STACK);
        stack.method = 99;
        assert_eq!(
            errors(&raw_zip(&[app, stack], false)),
            strings(&[
                "app.json: uses compression method 12 (bzip2); only stored (0) and deflate (8) are supported",
                "stack.json: uses compression method 99 (AES encryption); only stored (0) and deflate (8) are supported",
            ])
        );
    }

    #[test]
    fn encrypted_json_is_reported() {
        let mut app = Raw::stored("app.json", APP);
        app.flags = FLAG_ENCRYPTED;
        assert_eq!(
            errors(&raw_zip(&[app, Raw::stored("stack.json", STACK)], false)),
            strings(&["app.json: is encrypted; stackdrop cannot read encrypted files"])
        );
    }

    #[test]
    fn an_encrypted_or_oddly_compressed_code_file_is_refused_naming_the_entry() {
        let mut secret = Raw::stored("app/key.pem", b"x");
        secret.flags = FLAG_ENCRYPTED;
        let mut bz = Raw::stored("app/data.bin", b"y");
        bz.method = 12;
        let files = [
            Raw::stored("app.json", APP),
            Raw::stored("stack.json", STACK),
            secret,
            Raw::stored("app/main.py", b"print(1)"),
            bz,
        ];
        assert_eq!(
            errors(&raw_zip(&files, false)),
            strings(&[
                "stack.zip: entry \"app/key.pem\" is encrypted; stackdrop cannot unpack encrypted files",
                "stack.zip: entry \"app/data.bin\" uses compression method 12 (bzip2); only stored (0) and deflate (8) are supported",
            ])
        );
    }

    #[test]
    fn many_encrypted_files_are_listed_up_to_the_limit() {
        let mut files = vec![
            Raw::stored("app.json", APP),
            Raw::stored("stack.json", STACK),
        ];
        for i in 0..MAX_LISTED_NAMES + 3 {
            let mut f = Raw::stored(&format!("f{i:02}"), b"x");
            f.flags = FLAG_ENCRYPTED;
            files.push(f);
        }
        let errs = errors(&raw_zip(&files, false));
        assert_eq!(errs.len(), MAX_LISTED_NAMES + 1);
        assert_eq!(
            errs.last().unwrap(),
            "stack.zip: and 3 more entries that cannot be unpacked"
        );
    }

    #[test]
    fn a_symlinked_json_is_reported() {
        let zip = build_with(
            &[File("app.json", APP)],
            SimpleFileOptions::default(),
            |w| {
                w.add_symlink("stack.json", "/etc/passwd", SimpleFileOptions::default())
                    .unwrap()
            },
        );
        assert_eq!(
            errors(&zip),
            strings(&["stack.json: is a symbolic link; it must be a regular file"])
        );
    }

    #[test]
    fn a_stored_size_mismatch_is_reported() {
        let mut app = Raw::stored("app.json", APP);
        app.size = 3;
        assert_eq!(
            errors(&raw_zip(&[app, Raw::stored("stack.json", STACK)], false)),
            strings(&[&format!(
                "app.json: is corrupt: it is stored ({} bytes) but its size says 3 bytes",
                APP.len()
            )])
        );
    }

    #[test]
    fn a_local_header_naming_another_file_is_reported() {
        let mut app = Raw::stored("app.json", APP);
        app.local_name = Some(b"evil.sh".to_vec());
        let mut stack = Raw::stored("stack.json", STACK);
        stack.local_name = Some(b"stack.jsoX".to_vec());
        assert_eq!(
            errors(&raw_zip(&[app, stack], false)),
            strings(&[
                "app.json: is corrupt: its local header names another file",
                "stack.json: is corrupt: its local header names another file"
            ])
        );
    }

    #[test]
    fn bad_local_offsets_are_reported() {
        let mut zip = raw_zip(&with_json(vec![]), false);
        let app = central_at(&zip, "app.json");
        put32(&mut zip, app + 42, 5);
        let stack = central_at(&zip, "stack.json");
        let near_end = (zip.len() - 10) as u32;
        put32(&mut zip, stack + 42, near_end);
        assert_eq!(
            errors(&zip),
            strings(&[
                "app.json: is corrupt: there is no local header at offset 5",
                &format!("stack.json: is corrupt: its local header (offset {}) lies past the end of the bundle", zip.len() - 10),
            ])
        );
    }

    #[test]
    fn data_past_the_end_is_reported() {
        // The last entry's data runs into the central directory and past the end of the file.
        let mut zip = raw_zip(
            &[
                Raw::stored("w/x", b""),
                Raw::stored("app.json", APP),
                Raw::stored("stack.json", STACK),
            ],
            false,
        );
        let at = central_at(&zip, "stack.json");
        let size = 100_000u32;
        put32(&mut zip, at + 20, size);
        put32(&mut zip, at + 24, size);
        assert_eq!(
            errors(&zip),
            strings(&["stack.json: is truncated: its data lies past the end of the bundle"])
        );
    }

    // ---- not zips, broken zips, limits ----

    #[test]
    fn empty_input_is_not_a_zip() {
        assert_eq!(
            errors(b""),
            strings(&["stack.zip: not a zip file (it is empty)"])
        );
    }

    #[test]
    fn garbage_is_not_a_zip() {
        let no_eocd = strings(&["stack.zip: not a zip file (no end of central directory record)"]);
        assert_eq!(errors(b"PK"), no_eocd);
        assert_eq!(errors(&noise(100_000)), no_eocd);
        assert_eq!(errors(b"{\"name\": \"not a zip\"}"), no_eocd);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let zip = simple(Deflated);
        for n in 0..zip.len() {
            assert!(read(&zip[..n]).is_err(), "truncated at {n}");
        }
        // Cut in the middle of the central directory (the end record kept).
        let eocd = eocd_at(&zip);
        let mut cut = zip[..eocd - 10].to_vec();
        cut.extend_from_slice(&zip[eocd..]);
        let e = errors(&cut);
        assert!(
            e[0].starts_with("stack.zip: is truncated or corrupt: its central directory ("),
            "{e:?}"
        );
    }

    #[test]
    fn a_directory_past_the_end_is_reported() {
        let mut zip = simple(Stored);
        let eocd = eocd_at(&zip);
        put32(&mut zip, eocd + 16, 0xFFFF_FFF0);
        let size = u32_at(&zip, eocd + 12).unwrap();
        assert_eq!(
            errors(&zip),
            strings(&[&format!(
                "stack.zip: is truncated or corrupt: its central directory ({size} bytes at offset 4294967280) lies past the end of the file ({} bytes)",
                zip.len()
            )])
        );
    }

    #[test]
    fn a_wrong_entry_count_is_reported() {
        let mut zip = simple(Stored);
        let eocd = eocd_at(&zip);
        zip[eocd + 10..eocd + 12].copy_from_slice(&4u16.to_le_bytes());
        assert_eq!(errors(&zip), strings(&["stack.zip: is corrupt: its end record counts 4 entries but its central directory holds 5"]));
        zip[eocd + 10..eocd + 12].copy_from_slice(&1000u16.to_le_bytes());
        let size = u32_at(&zip, eocd + 12).unwrap();
        assert_eq!(errors(&zip), strings(&[&format!("stack.zip: is corrupt: a central directory of {size} bytes cannot hold 1000 entries")]));
    }

    #[test]
    fn a_damaged_central_entry_is_reported() {
        let mut zip = simple(Stored);
        let at = central_at(&zip, "stack.json");
        zip[at + 28..at + 30].copy_from_slice(&5000u16.to_le_bytes()); // name length
        assert_eq!(
            errors(&zip),
            strings(&["stack.zip: is corrupt: central directory entry #5 is truncated"])
        );
    }

    #[test]
    fn limits_are_checked_before_the_directory_is_read() {
        let zip = simple(Stored);
        let src = Counting::new(zip);
        let limits = Limits {
            max_entries: 4,
            ..Limits::default()
        };
        let e = read_bundle(&src, "s3://b/k.zip", &limits).unwrap_err();
        assert_eq!(
            e,
            vec![Problem::file(
                "s3://b/k.zip",
                "holds 5 entries, over the limit of 4"
            )]
        );
        assert_eq!(src.reads.get(), 1);

        let src = Counting::new(src.inner);
        let limits = Limits {
            max_central_directory: 64,
            ..Limits::default()
        };
        let e = read_bundle(&src, "s3://b/k.zip", &limits).unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("s3://b/k.zip: has a central directory of "),
            "{e:?}"
        );
        assert!(
            e[0].to_string()
                .ends_with(" bytes, over the 64 bytes limit"),
            "{e:?}"
        );
        assert_eq!(src.reads.get(), 1);

        let limits = Limits {
            max_json_bytes: 10,
            ..Limits::default()
        };
        let e = read_bundle(&src.inner, "k.zip", &limits).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            format!("app.json: is {} bytes, over the 10 bytes limit", APP.len())
        );
    }

    #[test]
    fn source_errors_are_reported() {
        struct Broken;
        impl ReadAt for Broken {
            fn len(&self) -> u64 {
                1000
            }
            fn read_at(&self, _: u64, _: usize) -> Result<Vec<u8>, SourceError> {
                Err(SourceError("AccessDenied".into()))
            }
        }
        assert_eq!(
            read_bundle(&Broken, "s3://b/k", &Limits::default()).unwrap_err(),
            vec![Problem::file("s3://b/k", "cannot be read: AccessDenied")]
        );
        struct Short;
        impl ReadAt for Short {
            fn len(&self) -> u64 {
                1000
            }
            fn read_at(&self, _: u64, _: usize) -> Result<Vec<u8>, SourceError> {
                Ok(vec![0; 3])
            }
        }
        assert_eq!(
            read_bundle(&Short, "s3://b/k", &Limits::default()).unwrap_err(),
            vec![Problem::file(
                "s3://b/k",
                "cannot be read: asked for 1000 bytes at offset 0, got 3"
            )]
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(MAX_JSON_BYTES), "1 MiB");
        assert_eq!(human(32 << 20), "32 MiB");
        assert_eq!(human(64 << 10), "64 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }

    // ---- Bundle ----

    #[test]
    fn from_files_sorts_and_dedups() {
        let b = Bundle::from_files(
            strings(&["b", "a/x", "b", "app.json"]),
            APP.to_vec(),
            STACK.to_vec(),
        );
        assert_eq!(b.root, "");
        assert_eq!(b.files, strings(&["a/x", "app.json", "b"]));
    }

    #[test]
    fn has_folder_matches_whole_components() {
        let b = Bundle::from_files(
            strings(&["app.json", "src/a-b/x", "src/a/y", "src/ab", "stack.json"]),
            vec![],
            vec![],
        );
        assert!(b.has_folder("src"));
        assert!(b.has_folder("src/a"));
        assert!(b.has_folder("src/a/"));
        assert!(b.has_folder("src/a-b"));
        assert!(!b.has_folder("src/ab"), "a file is not a folder");
        assert!(!b.has_folder("sr"));
        assert!(!b.has_folder("src/a/y"));
        assert!(!b.has_folder("zzz"));
        assert!(b.has_folder(""), "the root holds code");
        let only_config = Bundle::from_files(strings(&["app.json", "stack.json"]), vec![], vec![]);
        assert!(!only_config.has_folder(""));
    }

    // ---- nothing panics ----

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = read(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_an_end_record_never_panic(
            head in proptest::collection::vec(any::<u8>(), 0..300),
            eocd in proptest::collection::vec(any::<u8>(), 18..=18),
        ) {
            let mut bytes = head;
            bytes.extend_from_slice(&EOCD_SIG.to_le_bytes());
            bytes.extend_from_slice(&eocd);
            let n = bytes.len();
            bytes[n - 2..].copy_from_slice(&[0, 0]);
            let _ = read(&bytes);
        }

        #[test]
        fn mutated_zips_never_panic(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            do_cut in any::<bool>(),
        ) {
            let mut zip = match which {
                0 => simple(Stored),
                1 => simple(Deflated),
                _ => {
                    let mut entries = with_json(vec![Raw::stored("w/a", b"a")]);
                    for e in &mut entries { e.zip64 = true; }
                    raw_zip(&entries, true)
                }
            };
            for (at, byte) in edits {
                let i = at.index(zip.len());
                zip[i] = byte;
            }
            if do_cut {
                zip.truncate(cut.index(zip.len() + 1));
            }
            let _ = read(&zip);
        }
    }
}
