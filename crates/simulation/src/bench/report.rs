//! The benchmark's report: JSON for machines, Markdown for the docs, and
//! the checks that tell a sane report from a broken run.

use std::fmt::Write;

use acteon_core::SubscriptionMode;
use serde::Serialize;

use super::Scenario;
use super::durable::DurableReport;
use super::fanout::FanoutRow;
use super::in_process::InProcessReport;
use super::latency::EndToEndRow;
use super::setup::Pipeline;
use super::stats::{LatencySummary, millis};
use super::throughput::{
    BARE_HANDLER, BATCH_RECORDS, BOUND_TOPIC, DIRECT_RDKAFKA, IDEMPOTENCY_KEYS, ThroughputReport,
};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started, UTC.
    pub date: String,
    pub cores: usize,
    /// `quick` or `full`.
    pub mode: String,
    /// `release` or `debug`: debug figures say nothing about speed.
    pub build: String,
    pub kafka_bootstrap: Option<String>,
    /// The scenarios asked for; those on Kafka run only with a broker.
    pub scenarios: Vec<Scenario>,
    pub in_process: Option<InProcessReport>,
    pub http_memory: Option<ThroughputReport>,
    pub http_kafka: Option<ThroughputReport>,
    pub end_to_end: Vec<EndToEndRow>,
    pub fanout: Vec<FanoutRow>,
    pub durable: Option<DurableReport>,
    pub batch_kafka: Option<ThroughputReport>,
    pub typed_memory: Option<ThroughputReport>,
    pub goals: Vec<Goal>,
}

/// One of the goals and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

impl Goal {
    /// A goal that `ratio` be at least `least`.
    fn ratio_at_least(goal: String, ratio: f64, least: f64) -> Self {
        Self {
            goal,
            measured: format!("{ratio:.2}"),
            met: ratio >= least,
        }
    }
}

const KIB: u64 = 1024;

/// Threads a Kafka broadcast may add to an idle server, whatever its
/// subscribers: the shared reader's librdkafka threads and a few catch-ups.
const MAX_BROADCAST_THREADS: u64 = 32;
const MIB: f64 = 1024.0 * 1024.0;

impl Report {
    /// Fills in [`Report::goals`] from the figures.
    pub fn judge_goals(&mut self) {
        let mut goals = Vec::new();
        self.judge_publish_goals(&mut goals);
        self.judge_kafka_goals(&mut goals);
        self.judge_batch_goals(&mut goals);
        self.judge_typed_goals(&mut goals);
        for row in self.end_to_end.iter().filter(|row| row.backend == "memory") {
            goals.push(Goal {
                goal: "publish → SSE p99 < 5 ms, in-memory backend".to_owned(),
                measured: format!("{} ms", millis(row.end_to_end.p99_us)),
                met: row.end_to_end.p99_us < 5_000,
            });
        }
        self.judge_fanout_goals(&mut goals);
        self.judge_durable_goals(&mut goals);
        self.goals = goals;
    }

    /// HTTP publish on the in-memory backend at the highest concurrency,
    /// against the bare handler; idempotency keys against none, on both
    /// backends.
    fn judge_publish_goals(&self, goals: &mut Vec<Goal>) {
        if let Some(memory) = &self.http_memory {
            let top = memory.top_concurrency();
            for (pipeline, least) in [(Pipeline::Defaults, 0.75), (Pipeline::Full, 0.6)] {
                if let Some(row) = memory.row(pipeline.label(), top) {
                    goals.push(Goal::ratio_at_least(
                        format!(
                            "HTTP publish, in-memory backend, {}, C = {top}: ≥ {least} of the bare handler",
                            pipeline.label()
                        ),
                        row.ratio,
                        least,
                    ));
                }
            }
        }
        for (backend, report) in [
            ("in-memory", self.http_memory.as_ref()),
            ("Kafka", self.http_kafka.as_ref()),
        ] {
            let Some(report) = report else { continue };
            let top = report.top_concurrency();
            let (Some(keys), Some(without)) = (
                report.row(IDEMPOTENCY_KEYS, top),
                report.row(Pipeline::Defaults.label(), top),
            ) else {
                continue;
            };
            let ratio = keys.per_second / without.per_second.max(f64::EPSILON);
            goals.push(Goal::ratio_at_least(
                format!(
                    "idempotency keys on, {backend} backend, defaults, C = {top}: ≥ 0.9 of the same without them"
                ),
                ratio,
                0.9,
            ));
        }
    }

    /// On Kafka, against the bare handler's figures and rdkafka's: CPU per
    /// record, and latency at C = 1. Judged only when both scenarios ran.
    fn judge_kafka_goals(&self, goals: &mut Vec<Goal>) {
        let (Some(memory), Some(kafka)) = (&self.http_memory, &self.http_kafka) else {
            return;
        };
        for pipeline in [Pipeline::Defaults, Pipeline::Full] {
            for row in kafka
                .rows
                .iter()
                .filter(|row| row.target == pipeline.label() && row.concurrency > 1)
            {
                let at = row.concurrency;
                let (Some(bare), Some(direct)) =
                    (memory.row(BARE_HANDLER, at), kafka.row(DIRECT_RDKAFKA, at))
                else {
                    continue;
                };
                let (acteon, bare_us, direct_us) = (
                    row.server_cpu_us_per_record(),
                    bare.server_cpu_us_per_record(),
                    direct.generator_cpu_us_per_record(),
                );
                let limit = 1.25 * (bare_us + direct_us);
                goals.push(Goal {
                    goal: format!(
                        "HTTP publish on Kafka, {}, C = {at}: server CPU per record ≤ 1.25 × \
                         (the bare handler's + direct rdkafka's)",
                        pipeline.label()
                    ),
                    measured: format!(
                        "{acteon:.0} µs against 1.25 × ({bare_us:.0} + {direct_us:.0}) = {limit:.0} µs \
                         ({:.2} ×); throughput {:.2} of direct rdkafka",
                        acteon / (bare_us + direct_us).max(f64::EPSILON),
                        row.ratio
                    ),
                    met: acteon <= limit,
                });
            }
            let (Some(row), Some(bare), Some(direct)) = (
                kafka.row(pipeline.label(), 1),
                memory.row(BARE_HANDLER, 1),
                kafka.row(DIRECT_RDKAFKA, 1),
            ) else {
                continue;
            };
            let limit_us = direct.latency.p50_us + bare.latency.p50_us + 50;
            goals.push(Goal {
                goal: format!(
                    "HTTP publish on Kafka, {}, C = 1: p50 ≤ direct rdkafka's + the bare handler's + 50 µs",
                    pipeline.label()
                ),
                measured: format!(
                    "{} µs against {} + {} + 50 = {limit_us} µs",
                    row.latency.p50_us, direct.latency.p50_us, bare.latency.p50_us
                ),
                met: row.latency.p50_us <= limit_us,
            });
        }
    }

    /// A bound topic against the same topic unbound, at every concurrency.
    fn judge_typed_goals(&self, goals: &mut Vec<Goal>) {
        let Some(typed) = &self.typed_memory else {
            return;
        };
        for row in typed.rows.iter().filter(|row| row.target == BOUND_TOPIC) {
            goals.push(Goal::ratio_at_least(
                format!(
                    "HTTP publish, in-memory backend, C = {}: a topic bound to a 20-property schema \
                     ≥ 0.8 of the same topic unbound",
                    row.concurrency
                ),
                row.ratio,
                0.8,
            ));
        }
    }

    fn judge_batch_goals(&self, goals: &mut Vec<Goal>) {
        let Some(batch) = &self.batch_kafka else {
            return;
        };
        let top = batch.top_concurrency();
        for pipeline in [Pipeline::Defaults, Pipeline::Full] {
            if let Some(row) = batch.row(pipeline.batch_label(), top) {
                goals.push(Goal::ratio_at_least(
                    format!(
                        "batch publish on Kafka, {}, C = {top}: ≥ 0.5 of rdkafka producing the same records pipelined",
                        pipeline.batch_label()
                    ),
                    row.ratio,
                    0.5,
                ));
            }
        }
    }

    /// The largest fan-out run of `mode` on `backend`.
    fn fanout_row(&self, backend: &str, mode: SubscriptionMode) -> Option<&FanoutRow> {
        self.fanout
            .iter()
            .filter(|row| row.run.backend == backend && row.run.mode == mode)
            .max_by_key(|row| row.run.subscribers)
    }

    fn judge_fanout_goals(&self, goals: &mut Vec<Goal>) {
        let delivered =
            |row: &FanoutRow| format!("{} of {} delivered", row.delivered, row.expected);
        let all_delivered = |row: &FanoutRow| row.delivered == row.expected;
        if let Some(row) = self.fanout_row("memory", SubscriptionMode::Shared) {
            goals.push(Goal {
                goal: format!(
                    "{} subscribers with distinct ids, in-memory backend: every event delivered, < 32 KiB each",
                    row.run.subscribers
                ),
                measured: format!(
                    "{}, {} KiB each",
                    delivered(row),
                    row.rss_per_subscriber_bytes / KIB
                ),
                met: all_delivered(row) && row.rss_per_subscriber_bytes < 32 * KIB,
            });
        }
        if let Some(row) = self.fanout_row("kafka", SubscriptionMode::Broadcast) {
            let added_threads = row.threads_subscribed.saturating_sub(row.threads_idle);
            goals.push(Goal {
                goal: format!(
                    "{} broadcast subscribers on Kafka: every event delivered, < 64 KiB each, \
                     threads independent of subscribers, subscribe p99 < 2 s",
                    row.run.subscribers
                ),
                measured: format!(
                    "{}, {} KiB each, {} threads more than idle, p99 {} ms",
                    delivered(row),
                    row.rss_per_subscriber_bytes / KIB,
                    added_threads,
                    millis(row.subscribe_latency.p99_us)
                ),
                met: all_delivered(row)
                    && row.rss_per_subscriber_bytes < 64 * KIB
                    && added_threads <= MAX_BROADCAST_THREADS
                    && row.subscribe_latency.p99_us < 2_000_000,
            });
            if let Some(memory) = self.fanout.iter().find(|m| {
                m.run.backend == "memory"
                    && m.run.mode == SubscriptionMode::Broadcast
                    && m.run.subscribers == row.run.subscribers
            }) {
                let ratio = row.burst_deliveries_per_second
                    / memory.burst_deliveries_per_second.max(f64::EPSILON);
                goals.push(Goal::ratio_at_least(
                    format!(
                        "broadcast delivery rate to {} subscribers on Kafka ≥ 0.5 of the in-memory backend's",
                        row.run.subscribers
                    ),
                    ratio,
                    0.5,
                ));
            }
        }
        if let Some(row) = self.fanout_row("kafka", SubscriptionMode::Shared) {
            goals.push(Goal {
                goal: format!(
                    "{} shared subscriptions with distinct ids on Kafka: every event delivered, \
                     ≥ 10 × the 80 deliveries/s of one consumer per connection",
                    row.run.subscribers
                ),
                measured: format!(
                    "{}, {:.0} deliveries/s, {} KiB and {:.1} threads each, subscribe p99 {} ms",
                    delivered(row),
                    row.burst_deliveries_per_second,
                    row.rss_per_subscriber_bytes / KIB,
                    row.threads_subscribed.saturating_sub(row.threads_idle) as f64
                        / row.run.subscribers.max(1) as f64,
                    millis(row.subscribe_latency.p99_us)
                ),
                met: all_delivered(row) && row.burst_deliveries_per_second >= 800.0,
            });
        }
    }

    fn judge_durable_goals(&self, goals: &mut Vec<Goal>) {
        let Some(durable) = &self.durable else {
            return;
        };
        if let Some(row) = durable
            .work_queue
            .iter()
            .find(|row| row.backend == "memory")
        {
            goals.push(Goal::ratio_at_least(
                format!(
                    "durable work queue, {} workers, in-memory backend: ≥ 0.5 of the ephemeral subscription's delivery rate",
                    row.workers
                ),
                row.ratio,
                0.5,
            ));
        }
        for row in &durable.redelivery {
            let limit_us = row.ack_deadline_ms * 1_200;
            goals.push(Goal {
                goal: format!(
                    "redelivery after a missed {} ms deadline within deadline + 20 %",
                    row.ack_deadline_ms
                ),
                measured: format!("max {} ms", millis(row.redelivered_after.max_us)),
                met: row.redelivered_after.max_us <= limit_us,
            });
        }
        if let Some(row) = &durable.in_flight {
            let for_100k = row.bytes_per_record as f64 * 100_000.0 / MIB;
            goals.push(Goal {
                goal: "100,000 records in flight across subscriptions: < 100 MiB of server memory"
                    .to_owned(),
                measured: format!(
                    "{} bytes per record ({for_100k:.1} MiB per 100,000)",
                    row.bytes_per_record
                ),
                met: for_100k < 100.0,
            });
        }
    }

    /// What makes the report unfit to read: missing or impossible figures,
    /// failed requests, undelivered events. Missed goals are not problems.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for case in self.in_process.iter().flat_map(|report| &report.cases) {
            if !(case.ns_per_publish.is_finite() && case.ns_per_publish > 0.0) {
                problems.push(format!(
                    "in process, {}: {} ns",
                    case.label, case.ns_per_publish
                ));
            }
        }
        for (scenario, report) in self.throughput_reports() {
            if report.rows.is_empty() {
                problems.push(format!("{scenario}: no rows"));
            }
            for row in &report.rows {
                let name = format!("{scenario}, {} at C = {}", row.target, row.concurrency);
                if row.failed > 0 {
                    problems.push(format!("{name}: {} records failed", row.failed));
                }
                if !(row.per_second.is_finite() && row.per_second > 0.0 && row.ratio > 0.0) {
                    problems.push(format!("{name}: {} per second", row.per_second));
                }
                check_latency(&mut problems, &name, &row.latency);
            }
        }
        if self.end_to_end.is_empty() && self.scenarios.contains(&Scenario::Latency) {
            problems.push("end to end: no rows".to_owned());
        }
        for row in &self.end_to_end {
            let name = format!("end to end, {}", row.backend);
            if row.received != row.messages {
                problems.push(format!(
                    "{name}: {} of {} messages received",
                    row.received, row.messages
                ));
            }
            check_latency(&mut problems, &name, &row.end_to_end);
            check_latency(&mut problems, &name, &row.publish);
        }
        if self.fanout.is_empty() && self.scenarios.contains(&Scenario::Fanout) {
            problems.push("fan-out: no rows".to_owned());
        }
        for row in &self.fanout {
            let name = row.name();
            if row.delivered != row.expected {
                problems.push(format!(
                    "{name}: {} of {} events delivered, {} subscribers short",
                    row.delivered, row.expected, row.subscribers_short
                ));
            }
            if row.memory.idle_bytes == 0 {
                problems.push(format!("{name}: no resident memory read"));
            }
            check_latency(&mut problems, &name, &row.paced_latency);
            check_latency(&mut problems, &name, &row.burst_latency);
        }
        if let Some(durable) = &self.durable {
            durable_problems(durable, &mut problems);
        }
        problems
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let kafka = self.kafka_bootstrap.as_deref().unwrap_or("none");
        let _ = writeln!(
            out,
            "Run of {date}: {cores} cores, {mode} run, {build} build, Kafka broker: {kafka}.\n",
            date = self.date,
            cores = self.cores,
            mode = self.mode,
            build = self.build,
        );
        out.push_str("### Goals\n\n| goal | measured | met |\n|---|---|---|\n");
        for goal in &self.goals {
            let met = if goal.met { "yes" } else { "**no**" };
            let _ = writeln!(out, "| {} | {} | {met} |", goal.goal, goal.measured);
        }

        if let Some(in_process) = &self.in_process {
            let _ = writeln!(
                out,
                "\n### 1. Publish in process\n\n{} rounds of {} publishes per case, alternating; median round.\n\n\
                 | case | ns per publish | × bare produce |\n|---|---:|---:|",
                in_process.rounds, in_process.publishes_per_round
            );
            for case in &in_process.cases {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.2} |",
                    case.label, case.ns_per_publish, case.ratio
                );
            }
        }
        if let Some(memory) = &self.http_memory {
            out.push_str("\n### 2. HTTP publish, in-memory backend\n\n");
            throughput_table(&mut out, memory, "requests/s", OnBroker::No);
        }
        if let Some(kafka) = &self.http_kafka {
            out.push_str("\n### 3. HTTP publish, Kafka backend\n\n");
            throughput_table(&mut out, kafka, "records/s", OnBroker::Yes);
        }

        if !self.end_to_end.is_empty() {
            self.latency_markdown(&mut out);
        }
        if !self.fanout.is_empty() {
            self.fanout_markdown(&mut out);
        }
        if let Some(durable) = &self.durable {
            durable_markdown(durable, &mut out);
        }
        if let Some(batch) = &self.batch_kafka {
            out.push_str(&format!(
                "\n### 10. Batch publish, Kafka backend\n\n\
                 Requests of {BATCH_RECORDS} records; rates and failures count records, latencies requests. \
                 The baseline sends {BATCH_RECORDS} records per task and awaits all their acknowledgements.\n\n"
            ));
            throughput_table(&mut out, batch, "records/s", OnBroker::Yes);
        }
        if let Some(typed) = &self.typed_memory {
            out.push_str(
                "\n### 11. HTTP publish to a topic bound to a schema, in-memory backend\n\n\
                 One topic, 20-property payloads, in turns unbound and bound to a schema that \
                 checks every property.\n\n",
            );
            throughput_table(&mut out, typed, "requests/s", OnBroker::No);
        }
        out
    }

    fn latency_markdown(&self, out: &mut String) {
        out.push_str(
            "\n### 4. Publish → SSE event, one message at a time\n\n\
             | backend | messages | received | duplicates | e2e p50 ms | e2e p99 ms | e2e max ms | publish p50 ms | publish p99 ms |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.end_to_end {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.backend,
                row.messages,
                row.received,
                row.duplicates,
                millis(row.end_to_end.p50_us),
                millis(row.end_to_end.p99_us),
                millis(row.end_to_end.max_us),
                millis(row.publish.p50_us),
                millis(row.publish.p99_us),
            );
        }
    }

    fn fanout_markdown(&self, out: &mut String) {
        out.push_str(
            "\n### 5. SSE fan-out\n\n\
             | backend | mode | subscribers | events each | delivered / expected | subscribe p50 ms | subscribe p99 ms | paced p50 ms | paced p99 ms | burst deliveries/s | burst p99 ms | server cores | generator cores | RSS per subscriber KiB | threads idle / subscribed |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.fanout {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {} | {} / {} |",
                row.run.backend,
                row.run.mode.as_str(),
                row.run.subscribers,
                row.messages,
                row.delivered,
                row.expected,
                millis(row.subscribe_latency.p50_us),
                millis(row.subscribe_latency.p99_us),
                millis(row.paced_latency.p50_us),
                millis(row.paced_latency.p99_us),
                row.burst_deliveries_per_second,
                millis(row.burst_latency.p99_us),
                row.server_cores_burst,
                row.generator_cores_burst,
                row.rss_per_subscriber_bytes / KIB,
                row.threads_idle,
                row.threads_subscribed,
            );
        }

        out.push_str(
            "\n### 6. Server resident memory (MiB)\n\n\
             | run | idle | subscribers assigned | events delivered | subscribers gone |\n|---|---:|---:|---:|---:|\n",
        );
        for row in &self.fanout {
            let memory = row.memory;
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                row.name(),
                memory.idle_bytes as f64 / MIB,
                memory.subscribed_bytes as f64 / MIB,
                memory.delivered_bytes as f64 / MIB,
                memory.closed_bytes as f64 / MIB,
            );
        }
    }

    /// The throughput scenarios that ran, with their names.
    fn throughput_reports(&self) -> impl Iterator<Item = (&'static str, &ThroughputReport)> {
        [
            ("HTTP publish", self.http_memory.as_ref()),
            ("Kafka publish", self.http_kafka.as_ref()),
            ("Kafka batch publish", self.batch_kafka.as_ref()),
            ("typed publish", self.typed_memory.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, report)| Some((name, report?)))
    }
}

fn durable_markdown(durable: &DurableReport, out: &mut String) {
    out.push_str(
        "\n### 7. Durable work queue against the ephemeral subscription\n\n\
             The topic holds the records before the round starts; C connections of one ephemeral \
             subscription id read them from the start, then C connections of one durable \
             subscription receive and acknowledge each (the client batches acks). Rates from \
             the first record to the last; median of the rounds, alternating.\n\n\
             | backend | C | records | ephemeral records/s | durable acked/s | ratio |\n\
             |---|---:|---:|---:|---:|---:|\n",
    );
    for row in &durable.work_queue {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} |",
            row.backend,
            row.workers,
            row.records,
            row.ephemeral_per_second,
            row.durable_per_second,
            row.ratio
        );
    }
    out.push_str(
            "\n### 8. Redelivery after a missed deadline\n\n\
             | backend | deadline ms | records | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n",
        );
    for row in &durable.redelivery {
        let after = &row.redelivered_after;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.backend,
            row.ack_deadline_ms,
            row.records,
            millis(after.p50_us),
            millis(after.p99_us),
            millis(after.max_us)
        );
    }
    if let Some(row) = &durable.in_flight {
        let _ = writeln!(
            out,
            "\n### 9. Server memory per record in flight\n\n\
                 | subscriptions | records in flight | idle MiB | in flight MiB | bytes per record |\n\
                 |---:|---:|---:|---:|---:|\n\
                 | {} | {} | {:.1} | {:.1} | {} |",
            row.subscriptions,
            row.in_flight,
            row.idle_bytes as f64 / MIB,
            row.in_flight_bytes as f64 / MIB,
            row.bytes_per_record
        );
    }
}

fn durable_problems(durable: &DurableReport, problems: &mut Vec<String>) {
    if durable.work_queue.is_empty() || durable.redelivery.is_empty() {
        problems.push("durable subscriptions: no rows".to_owned());
    }
    for row in &durable.work_queue {
        let rates = [row.ephemeral_per_second, row.durable_per_second];
        if !rates.iter().all(|rate| rate.is_finite() && *rate > 0.0) {
            problems.push(format!("work queue, {}: rates {rates:?}", row.backend));
        }
    }
    for row in &durable.redelivery {
        if row.redelivered_after.count != row.records {
            problems.push(format!(
                "redelivery: {} of {} records redelivered",
                row.redelivered_after.count, row.records
            ));
        }
        check_latency(problems, "redelivery", &row.redelivered_after);
    }
    match &durable.in_flight {
        Some(row) if row.idle_bytes > 0 => {}
        _ => problems.push("records in flight: no resident memory read".to_owned()),
    }
}

fn check_latency(problems: &mut Vec<String>, name: &str, latency: &LatencySummary) {
    if let Some(problem) = latency.problem() {
        problems.push(format!("{name}: {problem}"));
    }
}

/// Whether a scenario's records go to the broker, whose CPU is then worth
/// a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnBroker {
    Yes,
    No,
}

/// A column shown only when `shown`: its cell, `–` where a row has no
/// figure.
fn optional_cell(shown: bool, figure: Option<f64>) -> String {
    match figure {
        _ if !shown => String::new(),
        Some(figure) => format!(" {figure:.1} |"),
        None => " – |".to_owned(),
    }
}

fn throughput_table(out: &mut String, report: &ThroughputReport, unit: &str, on: OnBroker) {
    let on_broker = on == OnBroker::Yes;
    let broker_watched = on_broker && report.rows.iter().any(|row| row.broker_cores.is_some());
    let requests_counted = on_broker
        && report
            .rows
            .iter()
            .any(|row| row.records_per_produce_request.is_some());
    let (mut notes, mut heads, mut rules) = (String::new(), String::new(), String::new());
    if broker_watched {
        notes.push_str(
            " Broker µs per record: the broker's, over the same records; the baseline's \
             producer runs in the generator.",
        );
        heads.push_str(" broker µs per record |");
        rules.push_str("---:|");
    }
    if requests_counted {
        notes.push_str(
            " Records per produce request: what the producer's requests to the broker \
             carried, from librdkafka's statistics.",
        );
        heads.push_str(" records per produce request |");
        rules.push_str("---:|");
    }
    let _ = writeln!(
        out,
        "Closed loop, C keep-alive connections (or producing tasks). At each C the targets take turns, \
         {} rounds of {} ms warm-up and {} ms measured; a row sums its rounds. \
         Ratio against `{}` at the same C.\n\n\
         Server µs per record: the server's CPU time over the records it took.{notes}\n\n\
         | target | C | {unit} | ratio | p50 ms | p99 ms | server cores | generator cores | server µs per record |{heads}\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|{rules}",
        report.rounds, report.warm_up_ms, report.measure_ms, report.baseline
    );
    for row in &report.rows {
        let (server, per_record) = match row.server_cores {
            Some(cores) => (
                format!("{cores:.2}"),
                format!("{:.1}", row.server_cpu_us_per_record()),
            ),
            None => ("–".to_owned(), "–".to_owned()),
        };
        let broker = optional_cell(broker_watched, row.broker_cpu_us_per_record());
        let fill = optional_cell(requests_counted, row.records_per_produce_request);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {} | {} | {server} | {:.2} | {per_record} |{broker}{fill}",
            row.target,
            row.concurrency,
            row.per_second,
            row.ratio,
            millis(row.latency.p50_us),
            millis(row.latency.p99_us),
            row.generator_cores,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::durable::{InFlightRow, RedeliveryRow, WorkQueueRow};
    use crate::bench::fanout::{FanoutRun, ServerMemory};
    use crate::bench::in_process::InProcessCase;
    use crate::bench::throughput::{BARE_HANDLER, ThroughputRow};

    fn latency(p50_us: u64) -> LatencySummary {
        LatencySummary {
            count: 100,
            p50_us,
            p99_us: p50_us * 2,
            max_us: p50_us * 3,
        }
    }

    fn throughput_row(target: &str, per_second: f64, ratio: f64) -> ThroughputRow {
        ThroughputRow {
            target: target.to_owned(),
            concurrency: 64,
            per_second,
            ratio,
            latency: latency(1_000),
            failed: 0,
            server_cores: Some(1.0),
            generator_cores: 0.5,
            broker_cores: None,
            records_per_produce_request: None,
        }
    }

    /// A sane report in which every goal is met.
    fn report() -> Report {
        let mut report = Report {
            date: "2026-11-23T00:00:00Z".to_owned(),
            cores: 2,
            mode: "quick".to_owned(),
            build: "debug".to_owned(),
            kafka_bootstrap: None,
            scenarios: Scenario::ALL.to_vec(),
            in_process: Some(InProcessReport {
                rounds: 1,
                publishes_per_round: 10,
                cases: vec![InProcessCase {
                    label: "bare".to_owned(),
                    ns_per_publish: 1_000.0,
                    ratio: 1.0,
                }],
            }),
            http_memory: Some(ThroughputReport {
                baseline: BARE_HANDLER.to_owned(),
                rounds: 1,
                warm_up_ms: 1,
                measure_ms: 1,
                rows: vec![
                    throughput_row(BARE_HANDLER, 1_000.0, 1.0),
                    throughput_row(Pipeline::Defaults.label(), 900.0, 0.9),
                    throughput_row(Pipeline::Full.label(), 800.0, 0.8),
                ],
            }),
            http_kafka: None,
            batch_kafka: None,
            typed_memory: None,
            end_to_end: vec![EndToEndRow {
                backend: "memory".to_owned(),
                messages: 100,
                received: 100,
                duplicates: 0,
                end_to_end: latency(200),
                publish: latency(100),
            }],
            fanout: vec![FanoutRow {
                run: FanoutRun {
                    backend: "memory",
                    mode: SubscriptionMode::Shared,
                    subscribers: 10,
                },
                messages: 5,
                delivered: 50,
                expected: 50,
                duplicates: 0,
                subscribers_short: 0,
                paced_latency: latency(300),
                burst_deliveries_per_second: 1_000.0,
                burst_latency: latency(400),
                server_cores_burst: 1.0,
                generator_cores_burst: 0.5,
                memory: ServerMemory {
                    idle_bytes: 10 << 20,
                    subscribed_bytes: 11 << 20,
                    delivered_bytes: 11 << 20,
                    closed_bytes: 11 << 20,
                },
                rss_per_subscriber_bytes: 20 * KIB,
                subscribe_latency: latency(1_000),
                subscribe_seconds: 0.1,
                threads_idle: 10,
                threads_subscribed: 10,
            }],
            durable: Some(DurableReport {
                work_queue: vec![WorkQueueRow {
                    backend: "memory".to_owned(),
                    workers: 2,
                    records: 100,
                    ephemeral_per_second: 1_000.0,
                    durable_per_second: 600.0,
                    ratio: 0.6,
                }],
                redelivery: vec![RedeliveryRow {
                    backend: "memory".to_owned(),
                    ack_deadline_ms: 1_000,
                    records: 100,
                    redelivered_after: LatencySummary {
                        count: 100,
                        p50_us: 1_000_500,
                        p99_us: 1_002_000,
                        max_us: 1_003_000,
                    },
                }],
                in_flight: Some(InFlightRow {
                    subscriptions: 2,
                    in_flight: 2_000,
                    idle_bytes: 10 << 20,
                    in_flight_bytes: 12 << 20,
                    bytes_per_record: 1_000,
                }),
            }),
            goals: Vec::new(),
        };
        report.judge_goals();
        report
    }

    #[test]
    fn a_sane_report_has_no_problems_and_meets_its_goals() {
        let report = report();
        assert_eq!(report.problems(), Vec::<String>::new());
        assert_eq!(report.goals.len(), 7, "{:?}", report.goals);
        assert!(
            report.goals.iter().all(|goal| goal.met),
            "{:?}",
            report.goals
        );
        assert!(
            report
                .markdown()
                .contains("| fan-out to 10 shared subscribers, memory |")
        );
    }

    #[test]
    fn undelivered_events_and_failed_requests_are_problems() {
        let mut report = report();
        report.fanout[0].delivered = 49;
        report.http_memory.as_mut().unwrap().rows[1].failed = 3;
        report.end_to_end[0].received = 99;
        let problems = report.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("3 records failed"), "{problems:?}");
        assert!(problems[1].contains("99 of 100 messages"), "{problems:?}");
        assert!(problems[2].contains("49 of 50 events"), "{problems:?}");
    }

    #[test]
    fn a_slow_acteon_misses_its_goal_without_making_the_report_insane() {
        let mut report = report();
        report.http_memory.as_mut().unwrap().rows[2].ratio = 0.5;
        report.fanout[0].rss_per_subscriber_bytes = 40 * KIB;
        report.durable.as_mut().unwrap().redelivery[0]
            .redelivered_after
            .max_us = 1_300_000;
        report.judge_goals();
        assert!(report.problems().is_empty());
        let missed: Vec<_> = report.goals.iter().filter(|goal| !goal.met).collect();
        assert_eq!(missed.len(), 3, "{missed:?}");
        assert!(report.markdown().contains("| **no** |"));
    }

    fn kafka_row(target: &str, per_second: f64, server_cores: Option<f64>) -> ThroughputRow {
        ThroughputRow {
            server_cores,
            generator_cores: 0.5,
            ..throughput_row(target, per_second, 1.0)
        }
    }

    #[test]
    fn kafka_cpu_per_record_is_judged_against_the_bare_handler_plus_rdkafka() {
        let mut report = report();
        // Bare handler: 1 core at 1,000/s = 1,000 µs; direct rdkafka: 0.5
        // cores at 1,000/s = 500 µs; the limit is 1.25 × 1,500 = 1,875 µs.
        report.http_kafka = Some(ThroughputReport {
            baseline: DIRECT_RDKAFKA.to_owned(),
            rounds: 1,
            warm_up_ms: 1,
            measure_ms: 1,
            rows: vec![
                kafka_row(DIRECT_RDKAFKA, 1_000.0, None),
                kafka_row(Pipeline::Defaults.label(), 1_000.0, Some(1.8)),
                kafka_row(Pipeline::Full.label(), 1_000.0, Some(1.9)),
            ],
        });
        report.judge_goals();
        let cpu: Vec<_> = report
            .goals
            .iter()
            .filter(|goal| goal.goal.contains("server CPU per record"))
            .collect();
        assert_eq!(cpu.len(), 2, "{cpu:?}");
        assert!(cpu[0].met, "{cpu:?}");
        assert!(!cpu[1].met, "{cpu:?}");
        assert!(
            cpu[0]
                .measured
                .starts_with("1800 µs against 1.25 × (1000 + 500) = 1875 µs"),
            "{cpu:?}"
        );
    }

    #[test]
    fn the_brokers_cpu_and_the_requests_fill_are_columns_of_the_kafka_tables_only() {
        let mut report = report();
        let batch = ThroughputReport {
            baseline: DIRECT_RDKAFKA.to_owned(),
            rounds: 1,
            warm_up_ms: 1,
            measure_ms: 1,
            rows: vec![
                ThroughputRow {
                    broker_cores: Some(0.4),
                    records_per_produce_request: Some(72.34),
                    ..kafka_row(Pipeline::Defaults.label(), 100_000.0, Some(1.0))
                },
                ThroughputRow {
                    broker_cores: Some(0.2),
                    ..kafka_row(Pipeline::Full.label(), 100_000.0, Some(1.0))
                },
            ],
        };
        report.batch_kafka = Some(batch);
        for row in &mut report.http_memory.as_mut().unwrap().rows {
            row.broker_cores = Some(0.01);
            row.records_per_produce_request = Some(1.0);
        }
        let markdown = report.markdown();
        assert!(
            markdown.contains("| 1.00 | 0.50 | 10.0 | 4.0 | 72.3 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| 1.00 | 0.50 | 10.0 | 2.0 | – |"),
            "{markdown}"
        );
        assert_eq!(markdown.matches("broker µs per record |").count(), 1);
        assert_eq!(markdown.matches("records per produce request |").count(), 1);
    }
}
