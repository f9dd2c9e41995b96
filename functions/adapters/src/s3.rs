//! The bundle in S3: its head, its place among the key's versions, and ranged reads so the
//! core's zip reader sees it as random-access bytes (never downloaded whole).

use crate::error::{code_of, Failure, Kind};
use aws_sdk_s3::Client;
use stackdrop_core::lifecycle::VersionEntry;
use stackdrop_core::source::{ReadAt, SourceError};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::runtime::Handle;

/// What HeadObject says of the bundle.
#[derive(Debug, Clone)]
pub struct Head {
    pub key: String,
    pub size: u64,
    pub version_id: Option<String>,
    /// Epoch milliseconds.
    pub last_modified_ms: u64,
}

/// Heads `key` (then `alternate`, if given and `key` is not found), pinned to `version_id`.
pub async fn head(
    s3: &Client,
    bucket: &str,
    key: &str,
    alternate: Option<&str>,
    version_id: Option<&str>,
) -> Result<Head, Failure> {
    for k in std::iter::once(key).chain(alternate) {
        let out = s3
            .head_object()
            .bucket(bucket)
            .key(k)
            .set_version_id(version_id.map(String::from))
            .send()
            .await;
        match out {
            Ok(h) => {
                return Ok(Head {
                    key: k.to_string(),
                    size: h.content_length().unwrap_or(0).max(0) as u64,
                    version_id: h
                        .version_id()
                        .filter(|v| *v != "null")
                        .map(String::from)
                        .or(version_id.map(String::from)),
                    last_modified_ms: h
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or(0)
                        .max(0) as u64,
                })
            }
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => continue,
            Err(e) => return Err(Failure::aws("HeadObject", e)),
        }
    }
    Err(Failure::new(
        Kind::BundleNotFound,
        format!(
            "s3://{bucket}/{key}{} does not exist (deleted before the deploy ran?)",
            version_id
                .map(|v| format!(" version {v}"))
                .unwrap_or_default()
        ),
    ))
}

/// Every version and delete marker of `key`, as S3 lists them (each kind newest first).
pub async fn versions(s3: &Client, bucket: &str, key: &str) -> Result<Vec<VersionEntry>, Failure> {
    let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
    let (mut nv, mut nd) = (0, 0);
    let mut out = Vec::new();
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .map_err(|e| Failure::aws("ListObjectVersions", e))?;
        let ms = |t: Option<&aws_sdk_s3::primitives::DateTime>| {
            t.and_then(|t| t.to_millis().ok()).unwrap_or(0)
        };
        for v in page.versions().iter().filter(|v| v.key() == Some(key)) {
            out.push(VersionEntry {
                version_id: v.version_id().unwrap_or("null").to_string(),
                delete_marker: false,
                latest: v.is_latest().unwrap_or(false),
                position: nv,
                last_modified_ms: ms(v.last_modified()),
            });
            nv += 1;
        }
        for d in page
            .delete_markers()
            .iter()
            .filter(|d| d.key() == Some(key))
        {
            out.push(VersionEntry {
                version_id: d.version_id().unwrap_or("null").to_string(),
                delete_marker: true,
                latest: d.is_latest().unwrap_or(false),
                position: nd,
                last_modified_ms: ms(d.last_modified()),
            });
            nd += 1;
        }
        if page.is_truncated() != Some(true) {
            return Ok(out);
        }
        key_marker = page.next_key_marker().map(String::from);
        version_marker = page.next_version_id_marker().map(String::from);
    }
}

/// An S3 object version read by ranged GETs, from blocking code running under
/// `spawn_blocking` (the core's reader is synchronous).
pub struct S3Object {
    pub client: Client,
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub handle: Handle,
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// The first read S3 failed (throttled, a 5xx, a dropped connection, the version gone): a
    /// failure of the read, never a problem of the bundle ([`S3Object::read_failure`]).
    pub failure: std::sync::Mutex<Option<Failure>>,
}

impl S3Object {
    /// Why a read of the object failed, if one did: the validator saw only "cannot be read",
    /// but this is the step's error (a throttle or 5xx is retried; a vanished version is
    /// `BundleNotFound`), not the bundle's.
    pub fn read_failure(&self) -> Option<Failure> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    fn failed(&self, f: Failure) -> SourceError {
        let text = f.message.clone();
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(f);
        }
        SourceError(text)
    }
}

impl ReadAt for S3Object {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset + len as u64 - 1;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let fut = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_version_id(self.version_id.clone())
            .range(format!("bytes={offset}-{end}"))
            .send();
        self.handle.block_on(async {
            let out = fut.await.map_err(|e| {
                let gone = matches!(code_of(&e), Some("NoSuchKey" | "NoSuchVersion"));
                let mut f = Failure::aws(&format!("GetObject bytes {offset}-{end}"), e);
                if gone {
                    f.kind = Kind::BundleNotFound;
                }
                self.failed(f)
            })?;
            let body = out.body.collect().await.map_err(|e| {
                let why = format!("reading bytes {offset}-{end} of the bundle: {e}");
                self.failed(Failure::new(Kind::Transient, why))
            })?;
            let bytes = body.into_bytes().to_vec();
            if bytes.len() != len {
                let why = format!(
                    "asked for {len} bytes at {offset}, S3 answered {}",
                    bytes.len()
                );
                return Err(self.failed(Failure::new(Kind::Transient, why)));
            }
            Ok(bytes)
        })
    }
}
