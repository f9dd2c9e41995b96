//! What starts a pipeline: an EventBridge S3 event, an S3 notification (`Records[]`), or a plain
//! `{"bucket","key","versionId"?,"action"?}` from a schedule or the console. All three become
//! one [`Trigger`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deploy,
    Teardown,
    Start,
    Stop,
    /// Re-resolve the current version's `resolve:ssm:` images; replace instances whose AMI
    /// changed (no-op otherwise).
    Refresh,
    /// Relaunch the current version's instances that were terminated outside stackdrop.
    Reconcile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    pub bucket: String,
    /// The object key, decoded.
    pub key: String,
    /// Another spelling of the key to try when `key` is not found (EventBridge delivers keys
    /// raw in some setups and URL-encoded in others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    pub action: Action,
    /// It came from S3 (an event), not from a person or a schedule asking.
    #[serde(default)]
    pub from_event: bool,
    /// Start or stop only this instance of the stack (a per-instance schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// S3 notification keys: `+` is a space, then percent-decoding (as UTF-8).
pub fn url_decode_key(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Reads any of the three input shapes. The error names what is missing.
pub fn parse_trigger(v: &Value) -> Result<Trigger, String> {
    // EventBridge: {"source":"aws.s3","detail-type":"Object Created","detail":{...}}
    if let Some(detail) = v.get("detail") {
        let kind = str_at(v, &["detail-type"]).unwrap_or("");
        let action = match kind {
            "Object Created" => Action::Deploy,
            "Object Deleted" => Action::Teardown,
            other => return Err(format!("unsupported EventBridge event {other:?} (expected Object Created or Object Deleted)")),
        };
        let bucket =
            str_at(detail, &["bucket", "name"]).ok_or("the event has no detail.bucket.name")?;
        let raw = str_at(detail, &["object", "key"]).ok_or("the event has no detail.object.key")?;
        let decoded = url_decode_key(raw);
        return Ok(Trigger {
            bucket: bucket.into(),
            key: raw.into(),
            alternate_key: (decoded != raw).then_some(decoded),
            version_id: str_at(detail, &["object", "version-id"]).map(Into::into),
            action,
            from_event: true,
            instance: None,
        });
    }
    // S3 notification: {"Records":[{"eventName":"ObjectCreated:Put","s3":{...}}]}
    if let Some(records) = v.get("Records") {
        let records = records.as_array().ok_or("Records is not a list")?;
        let [record] = records.as_slice() else {
            return Err(format!(
                "expected exactly one S3 record, found {}",
                records.len()
            ));
        };
        let name = str_at(record, &["eventName"]).unwrap_or("");
        let action = if name.starts_with("ObjectCreated") {
            Action::Deploy
        } else if name.starts_with("ObjectRemoved") {
            Action::Teardown
        } else {
            return Err(format!("unsupported S3 event {name:?}"));
        };
        let s3 = record.get("s3").ok_or("the record has no s3 field")?;
        let bucket = str_at(s3, &["bucket", "name"]).ok_or("the record has no s3.bucket.name")?;
        let key = str_at(s3, &["object", "key"]).ok_or("the record has no s3.object.key")?;
        return Ok(Trigger {
            bucket: bucket.into(),
            key: url_decode_key(key),
            alternate_key: None,
            version_id: str_at(s3, &["object", "versionId"]).map(Into::into),
            action,
            from_event: true,
            instance: None,
        });
    }
    // Plain input from a schedule or the console.
    let bucket = str_at(v, &["bucket"]).ok_or("the input has no \"bucket\" (expected an S3 event or {\"bucket\",\"key\",\"versionId\"?,\"action\"?})")?;
    let key = str_at(v, &["key"]).ok_or("the input has no \"key\"")?;
    let action = match str_at(v, &["action"]) {
        None | Some("deploy") => Action::Deploy,
        Some("teardown") => Action::Teardown,
        Some("start") => Action::Start,
        Some("stop") => Action::Stop,
        Some("refresh") => Action::Refresh,
        Some("reconcile") => Action::Reconcile,
        Some(other) => {
            return Err(format!(
            "unknown action {other:?} (expected \"deploy\", \"teardown\", \"start\", \"stop\", \"refresh\" or \"reconcile\")"
        ))
        }
    };
    let instance = str_at(v, &["instance"]).map(String::from);
    if instance.is_some() && !matches!(action, Action::Start | Action::Stop) {
        return Err("\"instance\" is for \"start\" and \"stop\" only".into());
    }
    Ok(Trigger {
        bucket: bucket.into(),
        key: key.into(),
        alternate_key: None,
        version_id: str_at(v, &["versionId"]).map(Into::into),
        action,
        from_event: false,
        instance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eventbridge_object_created() {
        let e = json!({"version":"0","source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name":"b"},"object":{"key":"stacks/my stack.zip","version-id":"v1","sequencer":"00"}}});
        let t = parse_trigger(&e).unwrap();
        assert_eq!(
            (
                t.bucket.as_str(),
                t.key.as_str(),
                t.version_id.as_deref(),
                t.action
            ),
            ("b", "stacks/my stack.zip", Some("v1"), Action::Deploy)
        );
        assert_eq!(t.alternate_key, None);
    }

    #[test]
    fn eventbridge_encoded_key_keeps_both_spellings() {
        let e = json!({"detail-type":"Object Deleted","detail":{"bucket":{"name":"b"},"object":{"key":"my+stack%281%29.zip"}}});
        let t = parse_trigger(&e).unwrap();
        assert_eq!(t.action, Action::Teardown);
        assert_eq!(t.key, "my+stack%281%29.zip");
        assert_eq!(t.alternate_key.as_deref(), Some("my stack(1).zip"));
    }

    #[test]
    fn s3_records_are_url_decoded_plus_first() {
        let e = json!({"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"stacks%2Fa+b%2Bc%C3%A9.zip","versionId":"v2"}}}]});
        let t = parse_trigger(&e).unwrap();
        assert_eq!(t.key, "stacks/a b+cé.zip");
        assert_eq!(t.version_id.as_deref(), Some("v2"));
        let e = json!({"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]});
        assert_eq!(parse_trigger(&e).unwrap().action, Action::Teardown);
    }

    #[test]
    fn plain_input_from_console_or_schedule() {
        let t = parse_trigger(&json!({"bucket":"b","key":"k.zip"})).unwrap();
        assert_eq!((t.action, t.version_id), (Action::Deploy, None));
        let t =
            parse_trigger(&json!({"bucket":"b","key":"k.zip","versionId":"v","action":"teardown"}))
                .unwrap();
        assert_eq!(
            (t.action, t.version_id.as_deref()),
            (Action::Teardown, Some("v"))
        );
        let t = parse_trigger(&json!({"bucket":"b","key":"k.zip","action":"stop","instance":"w"}))
            .unwrap();
        assert_eq!((t.action, t.instance.as_deref()), (Action::Stop, Some("w")));
        for (word, action) in [
            ("refresh", Action::Refresh),
            ("reconcile", Action::Reconcile),
        ] {
            let t = parse_trigger(&json!({"bucket":"b","key":"k","action":word})).unwrap();
            assert_eq!(t.action, action);
        }
    }

    #[test]
    fn bad_inputs_say_what_is_missing() {
        assert_eq!(parse_trigger(&json!({"key":"k"})).unwrap_err(), "the input has no \"bucket\" (expected an S3 event or {\"bucket\",\"key\",\"versionId\"?,\"action\"?})");
        assert_eq!(
            parse_trigger(&json!({"bucket":"b","key":"k","action":"nuke"})).unwrap_err(),
            "unknown action \"nuke\" (expected \"deploy\", \"teardown\", \"start\", \"stop\", \"refresh\" or \"reconcile\")"
        );
        assert_eq!(
            parse_trigger(&json!({"bucket":"b","key":"k","action":"deploy","instance":"w"}))
                .unwrap_err(),
            "\"instance\" is for \"start\" and \"stop\" only"
        );
        assert_eq!(
            parse_trigger(&json!({"Records":[]})).unwrap_err(),
            "expected exactly one S3 record, found 0"
        );
        assert!(
            parse_trigger(&json!({"detail-type":"Object Restore Completed","detail":{}})).is_err()
        );
    }

    #[test]
    fn malformed_percent_sequences_are_kept() {
        assert_eq!(url_decode_key("100%"), "100%");
        assert_eq!(url_decode_key("a%zzb"), "a%zzb");
        assert_eq!(url_decode_key("%41%42"), "AB");
    }
}
