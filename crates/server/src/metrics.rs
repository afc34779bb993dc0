//! Prometheus metrics, exposed at `GET /metrics` in the OpenMetrics text
//! format.
//!
//! Counters and histograms are kept as requests go by. Figures that already
//! live elsewhere (open connections, the audit queue, dependency health,
//! durable subscriptions) are read at scrape time into a registry of their
//! own, so nothing is counted twice. Labels stay bounded: route templates,
//! never raw paths; tenants, never topics or keys.

use std::time::Duration;

use acteon_bus::ProduceFigures;
use axum::http::Method;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::request_context::Route;

/// The `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics`.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PREFIX: &str = "acteon";

/// 100 µs to about 6.5 s, doubling.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: Route,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PublishLabels {
    tenant: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// What the server counts as it goes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histograms<RouteLabels>,
    publishes: Family<PublishLabels, Counter>,
    produce_duration: Histogram,
    state_duration: Histograms<OperationLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let request_duration: Histograms<RouteLabels> =
            Family::new_with_constructor(latency_buckets);
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head (for SSE, to the stream's start), by method and route",
            request_duration.clone(),
        );
        let publishes = Family::default();
        registry.register(
            "publishes",
            "Publishes that reached the pipeline, by tenant and outcome",
            publishes.clone(),
        );
        let produce_duration = latency_buckets();
        registry.register(
            "produce_duration_seconds",
            "Time from a produce call to the broker's acknowledgement",
            produce_duration.clone(),
        );
        let state_duration: Histograms<OperationLabels> =
            Family::new_with_constructor(latency_buckets);
        registry.register(
            "state_operation_duration_seconds",
            "State store calls, by operation (append_audit is the audit trail's write)",
            state_duration.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            publishes,
            produce_duration,
            state_duration,
        }
    }
}

/// A method as a label: the common ones by name, the rest as one value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// A publish that left the pipeline with `outcome`.
    pub fn count_publish(&self, tenant: &str, outcome: &'static str) {
        self.publishes
            .get_or_create(&PublishLabels {
                tenant: tenant.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A request answered with `status` after `took`, by the route it
    /// matched.
    pub(crate) fn count_request(
        &self,
        method: &Method,
        route: &Route,
        status: u16,
        took: Duration,
    ) {
        let method = method_label(method);
        self.request_duration
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
    }

    pub fn observe_produce(&self, took: Duration) {
        self.produce_duration.observe(took.as_secs_f64());
    }

    pub fn observe_state(&self, operation: &'static str, took: Duration) {
        self.state_duration
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
    }

    /// The exposition: what was counted, then `live`, then the end marker.
    pub fn encode(&self, live: &Registry) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, live))
            .and_then(|()| encode_eof(&mut text));
        text
    }
}

/// Figures read at scrape time, registered under the same prefix.
#[derive(Debug)]
pub struct LiveFigures {
    registry: Registry,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SubscriptionLabels {
    namespace: String,
    tenant: String,
    subscription: String,
}

/// One durable subscription's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableFigures {
    pub namespace: String,
    pub tenant: String,
    pub id: String,
    pub lag: i64,
    pub in_flight: usize,
    pub delivered: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
}

impl LiveFigures {
    pub fn new() -> Self {
        Self {
            registry: Registry::with_prefix(PREFIX),
        }
    }

    /// Open SSE connections per tenant.
    pub fn connections(&mut self, by_tenant: Vec<(String, usize)>) {
        let family = Family::<TenantLabels, Gauge>::default();
        for (tenant, open) in by_tenant {
            family
                .get_or_create(&TenantLabels { tenant })
                .set(open as i64);
        }
        self.registry.register(
            "sse_connections",
            "Open SSE connections, ephemeral and durable, by tenant",
            family,
        );
    }

    pub fn audit(&mut self, queued: usize, dropped: u64) {
        let depth = Gauge::<i64>::default();
        depth.set(queued as i64);
        self.registry.register(
            "audit_queue_depth",
            "Audit records waiting to be written",
            depth,
        );
        self.counter(
            "audit_dropped",
            "Audit records that could not be stored",
            dropped,
        );
    }

    /// Whether each dependency answered its last readiness probe.
    pub fn dependencies(&mut self, up: [(&'static str, bool); 3]) {
        let family = Family::<DependencyLabels, Gauge>::default();
        for (dependency, answered) in up {
            family
                .get_or_create(&DependencyLabels { dependency })
                .set(i64::from(answered));
        }
        self.registry.register(
            "dependency_up",
            "1 if the dependency (bus, state, audit) answered the last readiness probe",
            family,
        );
    }

    pub fn durable(&mut self, subscriptions: &[DurableFigures]) {
        let lag = Family::<SubscriptionLabels, Gauge>::default();
        let in_flight = Family::<SubscriptionLabels, Gauge>::default();
        let delivered = Family::<SubscriptionLabels, Counter>::default();
        let redelivered = Family::<SubscriptionLabels, Counter>::default();
        let dead_lettered = Family::<SubscriptionLabels, Counter>::default();
        for figures in subscriptions {
            let labels = SubscriptionLabels {
                namespace: figures.namespace.clone(),
                tenant: figures.tenant.clone(),
                subscription: figures.id.clone(),
            };
            lag.get_or_create(&labels).set(figures.lag);
            in_flight
                .get_or_create(&labels)
                .set(figures.in_flight as i64);
            delivered.get_or_create(&labels).inc_by(figures.delivered);
            redelivered
                .get_or_create(&labels)
                .inc_by(figures.redelivered);
            dead_lettered
                .get_or_create(&labels)
                .inc_by(figures.dead_lettered);
        }
        let registry = &mut self.registry;
        registry.register(
            "durable_lag",
            "Records of the topic not yet settled, summed over partitions",
            lag,
        );
        registry.register(
            "durable_in_flight",
            "Records delivered and not yet settled",
            in_flight,
        );
        registry.register(
            "durable_delivered",
            "Deliveries in the subscription's life",
            delivered,
        );
        registry.register(
            "durable_redelivered",
            "Deliveries again after a nack or a missed deadline, in the subscription's life",
            redelivered,
        );
        registry.register(
            "durable_dead_lettered",
            "Records moved to the dead-letter topic, in the subscription's life",
            dead_lettered,
        );
    }

    /// The Kafka producer's requests and the records in them: their ratio
    /// is how full the requests are, which sets much of what a record
    /// costs the broker.
    pub fn kafka_produce(&mut self, figures: ProduceFigures) {
        self.counter(
            "kafka_produce_requests",
            "Produce requests the Kafka producer sent",
            figures.requests,
        );
        self.counter(
            "kafka_produced_records",
            "Records the Kafka producer sent, in all its produce requests",
            figures.records,
        );
    }

    /// A counter whose total is kept elsewhere.
    fn counter(&mut self, name: &str, help: &str, total: u64) {
        let counter = Counter::<u64>::default();
        counter.inc_by(total);
        self.registry.register(name, help, counter);
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for LiveFigures {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a scrape waits for one durable subscription's figures, and
/// for all of them.
const FIGURES_TIMEOUT: Duration = Duration::from_secs(2);
const ALL_FIGURES_TIMEOUT: Duration = Duration::from_secs(5);
/// Durable subscriptions asked at once during a scrape.
const FIGURES_AT_ONCE: usize = 8;

/// Reads the figures that live elsewhere. A durable subscription that does
/// not answer in time, or is not reached before the scrape's deadline, is
/// left out of this scrape.
pub(crate) async fn gather(app: &crate::app::AppState) -> LiveFigures {
    use futures::StreamExt;

    let mut live = LiveFigures::new();
    live.connections(app.connections.open_by_tenant());
    let audit = app.pipeline.audit.health();
    live.audit(app.pipeline.audit.queued(), audit.dropped());
    let probed = app.readiness.answer(app).await;
    live.dependencies(probed.up());
    if let Some(figures) = app.bus.produce_figures() {
        live.kafka_produce(figures);
    }
    let subscriptions = app
        .durable
        .list(&crate::durable::SubscriptionFilter::default())
        .unwrap_or_default();
    let figures: Vec<DurableFigures> = futures::stream::iter(subscriptions)
        .map(|subscription| async move {
            let (namespace, tenant, id) = (
                subscription.namespace.clone(),
                subscription.tenant.clone(),
                subscription.id.clone(),
            );
            let view =
                tokio::time::timeout(FIGURES_TIMEOUT, app.durable.view(&namespace, &tenant, &id))
                    .await
                    .ok()?
                    .ok()?;
            Some(DurableFigures {
                lag: view.partitions.iter().filter_map(|p| p.lag).sum(),
                in_flight: view.in_flight,
                delivered: view.delivered,
                redelivered: view.redelivered,
                dead_lettered: view.dead_lettered,
                namespace,
                tenant,
                id,
            })
        })
        .buffer_unordered(FIGURES_AT_ONCE)
        .take_until(tokio::time::sleep(ALL_FIGURES_TIMEOUT))
        .filter_map(std::future::ready)
        .collect()
        .await;
    live.durable(&figures);
    live
}
