//! Bundles on the local disk: a zip file (read like S3, a few ranges at a time) or a folder.

use crate::Fatal;
use stackdrop_core::bundle::{self, Bundle, Limits};
use stackdrop_core::source::{ReadAt, SourceError};
use stackdrop_core::validate::{self, ValidBundle};
use stackdrop_core::Problem;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

/// A zip file read at offsets, never whole.
pub struct LocalFile {
    file: File,
    len: u64,
}

impl LocalFile {
    pub fn open(path: &Path) -> std::io::Result<LocalFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(LocalFile { file, len })
    }
}

impl ReadAt for LocalFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| SourceError(e.to_string()))?;
        Ok(buf)
    }
}

/// Validates a zip or a folder. The outer error is for paths that cannot be read at all.
pub fn validate_path(path: &Path) -> Result<Result<ValidBundle, Vec<Problem>>, Fatal> {
    let meta = std::fs::metadata(path).map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
    if meta.is_dir() {
        return Ok(read_folder(path).and_then(|b| validate::validate_bundle(&b)));
    }
    let file = LocalFile::open(path).map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(bundle::read_bundle(&file, &name, &Limits::default())
        .and_then(|b| validate::validate_bundle(&b)))
}

/// Every regular file below `dir`, relative, `/`-separated, sorted (folders named `.git` skipped).
pub fn list_files(dir: &Path) -> Result<Vec<String>, Fatal> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Fatal(format!("{}: {e}", d.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| Fatal(format!("{}: {e}", d.display())))?;
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
            if ft.is_dir() {
                if entry.file_name() != ".git" {
                    stack.push(path);
                }
            } else if ft.is_file() {
                let rel = path.strip_prefix(dir).expect("below dir");
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(rel.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_json(dir: &Path, name: &str, problems: &mut Vec<Problem>) -> Vec<u8> {
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > bundle::MAX_JSON_BYTES => {
            problems.push(Problem::file(
                name,
                format!("is {} bytes, over the 1 MiB limit", m.len()),
            ));
            Vec::new()
        }
        Ok(_) => std::fs::read(&path).unwrap_or_else(|e| {
            problems.push(Problem::file(name, format!("cannot be read: {e}")));
            Vec::new()
        }),
        Err(_) => {
            let folder = dir.display();
            problems.push(Problem::file(
                folder.to_string(),
                format!("{name} is missing at the bundle's root"),
            ));
            Vec::new()
        }
    }
}

/// A folder read as a bundle (the same rules as a zip: the two JSON files at its root).
pub fn read_folder(dir: &Path) -> Result<Bundle, Vec<Problem>> {
    let files =
        list_files(dir).map_err(|Fatal(m)| vec![Problem::file(dir.display().to_string(), m)])?;
    let mut problems = Vec::new();
    let app = read_json(dir, "app.json", &mut problems);
    let stack = read_json(dir, "stack.json", &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    // With their sizes: the plan bounds what each instance's extraction may write.
    let sized = files
        .into_iter()
        .map(|f| {
            let size = std::fs::metadata(dir.join(&f))
                .map(|m| m.len())
                .unwrap_or(0);
            (f, size)
        })
        .collect();
    Ok(Bundle::from_sized_files(sized, app, stack))
}

pub struct ZipStats {
    pub files: usize,
    pub bytes: u64,
}

/// Zips `dir` (files at the zip's root, sorted, Unix modes kept) into `output`.
pub fn zip_folder(dir: &Path, output: &Path) -> Result<ZipStats, Fatal> {
    let fatal = |e: &dyn std::fmt::Display| Fatal(format!("{}: {e}", output.display()));
    let out_abs = output.canonicalize().ok();
    let files = list_files(dir)?;
    let tmp = output.with_extension("zip.partial");
    let mut zip = zip::ZipWriter::new(File::create(&tmp).map_err(|e| fatal(&e))?);
    let mut count = 0;
    for rel in &files {
        let path = dir.join(rel);
        if out_abs.is_some() && path.canonicalize().ok() == out_abs {
            continue; // never zip the output into itself
        }
        if path.canonicalize().ok() == tmp.canonicalize().ok() {
            continue;
        }
        let mode = std::fs::metadata(&path)
            .map_err(|e| fatal(&e))?
            .permissions()
            .mode();
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode & 0o777)
            .large_file(
                std::fs::metadata(&path)
                    .map(|m| m.len() >= 0xFFFF_FFFF)
                    .unwrap_or(false),
            );
        zip.start_file(rel.as_str(), opts).map_err(|e| fatal(&e))?;
        let mut f = File::open(&path).map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
        std::io::copy(&mut f, &mut zip).map_err(|e| fatal(&e))?;
        count += 1;
    }
    let mut file = zip.finish().map_err(|e| fatal(&e))?;
    file.flush().map_err(|e| fatal(&e))?;
    drop(file);
    std::fs::rename(&tmp, output).map_err(|e| fatal(&e))?;
    let bytes = std::fs::metadata(output).map_err(|e| fatal(&e))?.len();
    Ok(ZipStats {
        files: count,
        bytes,
    })
}
