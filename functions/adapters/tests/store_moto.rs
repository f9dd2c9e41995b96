//! The state store against moto's DynamoDB in server mode, over HTTP with the real SDK client:
//! conditional read-modify-write under contention, the lease and its fence, the fenced instance
//! record, expiry. moto_server comes from the project's .venv (`make venv`).

#[path = "common/moto.rs"]
mod moto;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, KeySchemaElement, KeyType, ScalarAttributeType,
};
use stackdrop_adapters::store::{Change, Store};
use stackdrop_adapters::Kind;
use stackdrop_core::lifecycle::{self, Claim, Launched, Lease, Op, OpAction};

async fn store(m: &moto::Moto) -> Store {
    let ddb = aws_sdk_dynamodb::Client::new(&m.conf().await);
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    ddb.create_table()
        .table_name("state")
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .unwrap();
    Store::new(ddb, "state")
}

fn op(id: &str) -> Op {
    Op {
        id: id.into(),
        action: OpAction::Deploy,
        source: "b/k".into(),
        version: Some(format!("v-{id}")),
        target: None,
    }
}

/// The claim as the claim function does it: the core decides, the store writes.
async fn claim(s: &Store, owner: &str, o: &Op, now: u64) -> Claim {
    s.update_stack("a/s", now * 1000, |state| {
        let mut next = state.clone();
        if next.desired.is_none() {
            next.desired = Some(o.clone());
        }
        let c = lifecycle::claim(&next, owner, o, now);
        if let Claim::Take { attempt } = c {
            next.lease = Some(Lease {
                owner: owner.into(),
                op: o.id.clone(),
                attempt,
                expires: now + 600,
                closing: false,
            });
            next.attempt = attempt;
            return Ok(Change::Write(next, c));
        }
        Ok(if next != *state {
            Change::Write(next, c)
        } else {
            Change::Keep(c)
        })
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn concurrent_read_modify_writes_all_land_once() {
    let m = moto::start();
    let s = store(&m).await;
    let bump = |n: u64| {
        let s = s.clone();
        async move {
            s.update_stack("a/s", n, |state| {
                let mut next = state.clone();
                next.attempt += 1;
                Ok(Change::Write(next, ()))
            })
            .await
        }
    };
    let results = futures_join((0..8).map(bump).collect()).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let state = s.stack("a/s").await.unwrap().unwrap();
    assert_eq!(state.attempt, 8, "no lost update");
    assert_eq!(state.rev, 8);
}

async fn futures_join<F: std::future::Future + Send + 'static>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_lease_serializes_operations_and_expires() {
    let m = moto::start();
    let s = store(&m).await;
    assert_eq!(
        claim(&s, "e1", &op("d1"), 100).await,
        Claim::Take { attempt: 1 }
    );
    assert_eq!(
        claim(&s, "e1", &op("d1"), 101).await,
        Claim::Held { attempt: 1 }
    );
    assert_eq!(
        claim(&s, "e2", &op("d1"), 102).await,
        Claim::Duplicate { of: "e1".into() }
    );
    // A newer request is recorded as desired, and waits while e1 holds the stack.
    s.update_stack("a/s", 0, |state| {
        let mut next = state.clone();
        next.desired = Some(op("d2"));
        Ok(Change::Write(next, ()))
    })
    .await
    .unwrap();
    assert!(matches!(
        claim(&s, "e3", &op("d2"), 103).await,
        Claim::Busy { .. }
    ));
    // e1's next step sees it was superseded, and touches nothing.
    let e = s.fence("a/s", "e1", 1, "d1", true, 104).await.unwrap_err();
    assert_eq!(e.kind, Kind::Superseded);
    // A crashed e1 cannot hold the stack for ever.
    assert_eq!(
        claim(&s, "e3", &op("d2"), 100 + 600).await,
        Claim::Take { attempt: 2 }
    );
    let e = s.hold("a/s", "e1", 1, 800).await.unwrap_err();
    assert_eq!(e.kind, Kind::LeaseLost);
    s.fence("a/s", "e3", 2, "d2", true, 801).await.unwrap();
    let state = s.stack("a/s").await.unwrap().unwrap();
    assert_eq!(
        state.lease.unwrap().expires,
        801 + lifecycle::LEASE_SECONDS,
        "renewed"
    );
}

#[tokio::test]
async fn a_closed_attempt_records_no_instance_and_creates_nothing() {
    let m = moto::start();
    let s = store(&m).await;
    assert_eq!(
        claim(&s, "e1", &op("d1"), 100).await,
        Claim::Take { attempt: 1 }
    );
    let launched = Launched {
        deployment: "d1".into(),
        name: "w".into(),
        at: 1,
    };
    s.register_instance("a/s", "e1", 1, "i-1", &launched)
        .await
        .unwrap();
    // Roll back starts: the attempt closes.
    s.update_stack("a/s", 0, |state| {
        let mut next = state.clone();
        next.lease.as_mut().unwrap().closing = true;
        Ok(Change::Write(next, ()))
    })
    .await
    .unwrap();
    let e = s
        .register_instance("a/s", "e1", 1, "i-2", &launched)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        Kind::LeaseLost,
        "a launch in flight must terminate its instance"
    );
    assert_eq!(
        s.fence("a/s", "e1", 1, "d1", true, 101)
            .await
            .unwrap_err()
            .kind,
        Kind::LeaseLost
    );
    s.fence("a/s", "e1", 1, "d1", false, 101).await.unwrap();
    let state = s.stack("a/s").await.unwrap().unwrap();
    assert_eq!(state.instances.keys().collect::<Vec<_>>(), vec!["i-1"]);
    // Another attempt's fence fails too.
    assert_eq!(
        s.hold("a/s", "e1", 2, 102).await.unwrap_err().kind,
        Kind::LeaseLost
    );
}
