//! `acteon subs ls|create|show|rm`: durable subscriptions.

use acteon_client::{DurableFilter, DurableSubscription, DurableSubscriptionSpec};
use anyhow::Context as _;

use super::Context;
use crate::args::{CreateSubArgs, SubsCommand};
use crate::output;
use crate::parse;

pub(super) async fn run(context: &Context, command: SubsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        SubsCommand::Ls {
            namespace,
            tenant,
            topic,
        } => {
            let filter = DurableFilter {
                namespace,
                tenant,
                topic,
            };
            let subscriptions = client
                .list_durable_subscriptions(&filter)
                .await
                .context("list subscriptions")?;
            if context.json() {
                return output::json(&subscriptions);
            }
            output::table(
                &[
                    "SUBSCRIPTION",
                    "TOPIC",
                    "FROM",
                    "ACK DEADLINE MS",
                    "MAX DELIVERIES",
                    "ORDERING",
                    "DEAD LETTERS",
                ],
                subscriptions.iter().map(|subscription| {
                    [
                        name(subscription),
                        subscription.topic.clone(),
                        subscription.from.to_string(),
                        subscription.ack_deadline_ms.to_string(),
                        subscription.max_deliveries.to_string(),
                        subscription.ordering.clone(),
                        subscription.dead_letter_topic.clone(),
                    ]
                }),
            )
        }
        SubsCommand::Create(args) => {
            let spec = spec(args)?;
            let what = format!("{}.{}.{}", spec.namespace, spec.tenant, spec.id);
            let subscription = client
                .create_durable_subscription(&spec)
                .await
                .with_context(|| format!("create subscription {what}"))?;
            if context.json() {
                output::json(&subscription)
            } else {
                output::line(format!(
                    "created {} on {} (from {})",
                    name(&subscription),
                    subscription.topic,
                    subscription.from
                ))
            }
        }
        SubsCommand::Show { subscription } => {
            let named = parse::subscription(&subscription)?;
            let view = client
                .get_durable_subscription(&named)
                .await
                .with_context(|| format!("show subscription {}", dotted(&named)))?;
            if context.json() {
                return output::json(&view);
            }
            let definition = &view.subscription;
            let backoff: Vec<String> = definition.backoff_ms.iter().map(u64::to_string).collect();
            output::fields([
                ("subscription", name(definition)),
                ("topic", definition.topic.clone()),
                ("from", definition.from.to_string()),
                ("ack deadline ms", definition.ack_deadline_ms.to_string()),
                ("max deliveries", definition.max_deliveries.to_string()),
                (
                    "backoff ms",
                    output::or_dash((!backoff.is_empty()).then(|| backoff.join(","))),
                ),
                ("max in flight", definition.max_in_flight.to_string()),
                ("ordering", definition.ordering.clone()),
                ("dead letters", definition.dead_letter_topic.clone()),
                ("created", output::time(&definition.created_at)),
                ("consumers", view.consumers.to_string()),
                ("in flight", view.in_flight.to_string()),
                ("delivered", view.delivered.to_string()),
                ("acked", view.acked.to_string()),
                ("redelivered", view.redelivered.to_string()),
                ("dead lettered", view.dead_lettered.to_string()),
                ("lost", view.lost.to_string()),
            ])?;
            output::line("")?;
            output::table(
                &["PARTITION", "COMMITTED", "END OFFSET", "LAG", "IN FLIGHT"],
                view.partitions.iter().map(|partition| {
                    [
                        partition.partition.to_string(),
                        partition.committed.to_string(),
                        output::or_dash(partition.end_offset),
                        output::or_dash(partition.lag),
                        partition.in_flight.to_string(),
                    ]
                }),
            )
        }
        SubsCommand::Rm { subscription } => {
            let named = parse::subscription(&subscription)?;
            client
                .delete_durable_subscription(&named)
                .await
                .with_context(|| format!("delete subscription {}", dotted(&named)))?;
            if context.json() {
                output::json(&serde_json::json!({ "deleted": dotted(&named) }))
            } else {
                output::line(format!("deleted {}", dotted(&named)))
            }
        }
    }
}

fn spec(args: CreateSubArgs) -> anyhow::Result<DurableSubscriptionSpec> {
    let named = parse::subscription(&args.subscription)?;
    Ok(DurableSubscriptionSpec {
        namespace: named.namespace,
        tenant: named.tenant,
        id: named.id,
        topic: args.topic,
        from: args.from.map(|from| from.position()),
        ack_deadline_ms: args.ack_deadline_ms,
        max_deliveries: args.max_deliveries,
        backoff_ms: args.backoff_ms,
        max_in_flight: args.max_in_flight,
        ordering: args.ordering.map(|ordering| ordering.as_str().to_owned()),
        mode: None,
        dead_letter_topic: args.dead_letter_topic,
    })
}

/// `namespace.tenant.id`, as the commands take it.
fn name(subscription: &DurableSubscription) -> String {
    dotted(&acteon_client::DurableRef::new(
        &subscription.namespace,
        &subscription.tenant,
        &subscription.id,
    ))
}

fn dotted(named: &acteon_client::DurableRef) -> String {
    format!("{}.{}.{}", named.namespace, named.tenant, named.id)
}
