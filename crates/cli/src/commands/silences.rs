//! `acteon silences ls|add|rm`.

use acteon_client::SilenceSpec;
use anyhow::Context as _;

use super::Context;
use crate::args::SilencesCommand;
use crate::exit::UsageError;
use crate::output;

pub(super) async fn run(context: &Context, command: SilencesCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        SilencesCommand::Ls { all } => {
            let silences = client.list_silences(all).await.context("list silences")?;
            if context.json() {
                return output::json(&silences);
            }
            output::table(
                &[
                    "ID",
                    "TENANT",
                    "NAMESPACE",
                    "TOPIC",
                    "CONDITION",
                    "STARTS",
                    "ENDS",
                    "COMMENT",
                ],
                silences.iter().map(|silence| {
                    [
                        silence.id.clone(),
                        silence.tenant.clone(),
                        output::or_dash(silence.namespace.as_deref()),
                        output::or_dash(silence.topic.as_deref()),
                        output::or_dash(silence.condition.as_deref()),
                        output::time(&silence.starts_at),
                        output::time(&silence.ends_at),
                        silence.comment.clone(),
                    ]
                }),
            )
        }
        SilencesCommand::Add(args) => {
            let duration_ms = args
                .duration
                .map(|duration| u64::try_from(duration.as_millis()))
                .transpose()
                .map_err(|_| UsageError("--duration is too long".to_owned()))?;
            let spec = SilenceSpec {
                tenant: args.tenant,
                namespace: args.namespace,
                topic: args.topic,
                condition: args.condition,
                ends_at: args.until,
                duration_ms,
                comment: args.comment,
            };
            let silence = client.create_silence(&spec).await.context("add silence")?;
            if context.json() {
                output::json(&silence)
            } else {
                output::line(format!(
                    "silence {} until {}",
                    silence.id,
                    output::time(&silence.ends_at)
                ))
            }
        }
        SilencesCommand::Rm { id } => {
            client
                .end_silence(&id)
                .await
                .with_context(|| format!("end silence {id}"))?;
            if context.json() {
                output::json(&serde_json::json!({ "ended": id }))
            } else {
                output::line(format!("ended silence {id}"))
            }
        }
    }
}
