//! A publish through the whole pipeline (10 rules, one quota, audit on an
//! SQLite state store) against a bare produce on the in-memory backend.
//!
//! ```text
//! cargo bench -p acteon-server --bench pipeline
//! ```

use std::sync::Arc;

use acteon_bus::{BusBackend, MemoryBackend};
use acteon_core::{Headers, OutgoingMessage, Topic, TopicName};
use acteon_server::pipeline::{
    AuditConfig, AuditLog, Pipeline, QuotaConfig, Quotas, RuleConfig, RuleSet, Silences,
};
use acteon_server::state::{SqliteStore, StateStore};
use criterion::{Criterion, criterion_group, criterion_main};

fn message(seq: u64) -> OutgoingMessage {
    OutgoingMessage {
        key: Some(format!("order-{}", seq % 64)),
        payload: serde_json::json!({ "seq": seq, "amount": 120, "kind": "order", "items": [1, 2, 3] }),
        headers: Headers::from([("x-trace-id".to_owned(), "bench".to_owned())]),
    }
}

/// Ten rules that all evaluate and none of which matches, so every publish
/// pays for all ten conditions.
fn rules() -> Vec<RuleConfig> {
    (0..10)
        .map(|i| RuleConfig {
            name: format!("rule-{i}"),
            priority: i,
            condition: format!(
                "tenant == \"other-{i}\" || (payload.amount > {} && headers[\"x-trace-id\"] == \"none\")",
                1000 + i
            ),
            action: if i % 2 == 0 { "deny" } else { "suppress" }.to_owned(),
            reason: None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topic_name = TopicName::new("bench", "demo", "orders").unwrap();
    let topic = Topic::new(topic_name.clone(), 4, 1, None).unwrap();

    let bare = MemoryBackend::default();
    let pipeline = runtime.block_on(async {
        bare.create_topic(&topic).await.unwrap();
        let bus: Arc<dyn BusBackend> = Arc::new(MemoryBackend::default());
        bus.create_topic(&topic).await.unwrap();
        let state: Arc<dyn StateStore> =
            Arc::new(SqliteStore::open(&dir.path().join("bench.db")).unwrap());
        let (audit, _writer) = AuditLog::start(Arc::clone(&state), AuditConfig::default());
        Pipeline {
            silences: Silences::load(state).await.unwrap(),
            rules: RuleSet::compile(&rules()).unwrap(),
            quotas: Quotas::new(&[QuotaConfig {
                tenant: "demo".into(),
                namespace: None,
                topic: None,
                max_per_second: u32::MAX,
                burst: None,
            }])
            .unwrap(),
            audit,
            bus,
        }
    });

    let mut group = c.benchmark_group("publish");
    let mut seq = 0;
    group.bench_function("bare in-memory produce", |b| {
        b.to_async(&runtime).iter(|| {
            seq += 1;
            bare.produce(&topic_name, message(seq))
        })
    });
    group.bench_function("pipeline: 10 rules, 1 quota, audit", |b| {
        b.to_async(&runtime).iter(|| {
            seq += 1;
            pipeline.publish(&topic_name, message(seq), None)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
