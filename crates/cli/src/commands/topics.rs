//! `acteon topics ls|create|rm|bind|unbind`.

use acteon_client::TopicFilter;
use acteon_core::{SchemaBinding, TopicRecord, TopicSpec};
use anyhow::Context as _;

use super::Context;
use crate::args::{CreateTopicArgs, TopicsCommand};
use crate::output;

pub(super) async fn run(context: &Context, command: TopicsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        TopicsCommand::Ls { namespace, tenant } => {
            let filter = TopicFilter { namespace, tenant };
            let topics = client
                .list_bus_topics(&filter)
                .await
                .context("list topics")?;
            if context.json() {
                output::json(&topics)
            } else {
                print_table(&topics)
            }
        }
        TopicsCommand::Create(args) => {
            let spec = spec(&args)?;
            let record = client.create_bus_topic(&spec).await.with_context(|| {
                format!("create {}.{}.{}", spec.namespace, spec.tenant, spec.name)
            })?;
            print_record(context, &record)
        }
        TopicsCommand::Bind {
            topic,
            subject,
            version,
        } => {
            let binding = SchemaBinding { subject, version };
            let record = client
                .bind_topic_schema(&topic, &binding)
                .await
                .with_context(|| format!("bind {topic} to {binding}"))?;
            print_record(context, &record)
        }
        TopicsCommand::Unbind { topic } => {
            let record = client
                .unbind_topic_schema(&topic)
                .await
                .with_context(|| format!("unbind {topic}"))?;
            print_record(context, &record)
        }
        TopicsCommand::Rm { topic } => {
            client
                .delete_bus_topic(&topic)
                .await
                .with_context(|| format!("delete {topic}"))?;
            if context.json() {
                output::json(&serde_json::json!({ "deleted": topic }))
            } else {
                output::line(format!("deleted {topic}"))
            }
        }
    }
}

fn spec(args: &CreateTopicArgs) -> anyhow::Result<TopicSpec> {
    let name = crate::parse::topic_name(&args.name)?;
    Ok(TopicSpec {
        namespace: name.namespace().to_owned(),
        tenant: name.tenant().to_owned(),
        name: name.name().to_owned(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        retention_ms: args.retention_ms,
        schema: args.schema.clone(),
    })
}

/// One topic, as JSON or as a table of one row.
fn print_record(context: &Context, record: &TopicRecord) -> anyhow::Result<()> {
    if context.json() {
        output::json(record)
    } else {
        print_table(std::slice::from_ref(record))
    }
}

fn print_table(topics: &[TopicRecord]) -> anyhow::Result<()> {
    output::table(
        &[
            "TOPIC",
            "PARTITIONS",
            "REPLICATION",
            "RETENTION MS",
            "SCHEMA",
            "CREATED",
        ],
        topics.iter().map(|record| {
            let topic = &record.topic;
            [
                topic.kafka_topic_name().to_owned(),
                topic.partitions().to_string(),
                topic.replication_factor().to_string(),
                output::or_dash(topic.retention_ms()),
                output::or_dash(topic.schema()),
                output::time(&record.created_at),
            ]
        }),
    )
}
