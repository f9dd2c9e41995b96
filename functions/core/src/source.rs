//! Random access to a bundle's bytes: a local file, an in-memory buffer, or (in the Lambda)
//! an S3 object read by ranged GETs. The bundle reader only ever asks for a few ranges.

use std::fmt;

/// Why a read failed (I/O, network, S3 error). Carried as text: the reader only reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// Bytes that can be read at any offset.
pub trait ReadAt {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Reads exactly `len` bytes at `offset`. Callers never ask past [`ReadAt::len`].
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReadAt for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        let start =
            usize::try_from(offset).map_err(|_| SourceError("offset out of range".into()))?;
        let end = start.checked_add(len).filter(|&e| e <= <[u8]>::len(self));
        match end {
            Some(end) => Ok(self[start..end].to_vec()),
            None => Err(SourceError(format!(
                "read of {len} bytes at {offset} is past the end"
            ))),
        }
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        self.as_slice().read_at(offset, len)
    }
}

/// Counts the reads and bytes asked of an inner source (for tests and benchmarks that show
/// the reader never touches the code).
pub struct Counting<S> {
    pub inner: S,
    pub reads: std::cell::Cell<u64>,
    pub bytes: std::cell::Cell<u64>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Counting {
            inner,
            reads: 0.into(),
            bytes: 0.into(),
        }
    }
}

impl<S: ReadAt> ReadAt for Counting<S> {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        self.reads.set(self.reads.get() + 1);
        self.bytes.set(self.bytes.get() + len as u64);
        self.inner.read_at(offset, len)
    }
}
