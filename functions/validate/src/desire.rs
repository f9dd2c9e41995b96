//! Records a request as the stack's desired operation, in S3's order of the key's versions.

use stackdrop_adapters::store::Change;
use stackdrop_adapters::{now_ms, s3, Clients, Failure};
use stackdrop_core::lifecycle::{self, Desire, Op};

/// Writes `op` as desired unless a newer request holds the stack. S3's order is read against
/// the desired operation seen; if another request is recorded meanwhile, it is read again.
pub async fn record(clients: &Clients, stack_id: &str, op: &Op) -> Result<Desire, Failure> {
    let store = clients.store();
    loop {
        let seen = store.stack(stack_id).await?.unwrap_or_default().desired;
        let order = match (&seen, &op.version) {
            (Some(d), Some(mine)) if d.source == op.source => match &d.version {
                Some(theirs) => {
                    let (bucket, key) = op.source.split_once('/').unwrap_or_default();
                    let entries = s3::versions(clients.s3(), bucket, key).await?;
                    lifecycle::order(&entries, mine, theirs)
                }
                None => None,
            },
            _ => None,
        };
        let outcome = store
            .update_stack(stack_id, now_ms(), |state| {
                if state.desired != seen {
                    return Ok(Change::Keep(None));
                }
                let d = lifecycle::desire(state, op, order);
                Ok(match d {
                    Desire::Record => {
                        let mut next = state.clone();
                        next.desired = Some(op.clone());
                        Change::Write(next, Some(d))
                    }
                    _ => Change::Keep(Some(d)),
                })
            })
            .await?;
        if let Some(d) = outcome {
            return Ok(d);
        }
    }
}
