//! `acteon schemas ls|register|versions|show|check|config|rm`.

use std::io::Read as _;

use acteon_client::SubjectRef;
use anyhow::Context as _;
use serde_json::{Value, json};

use super::Context;
use crate::args::SchemasCommand;
use crate::exit::UsageError;
use crate::output;

pub(super) async fn run(context: &Context, command: SchemasCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        SchemasCommand::Ls { namespace, tenant } => {
            let subjects = client
                .list_schema_subjects(&namespace, &tenant)
                .await
                .with_context(|| format!("list the subjects of {namespace}.{tenant}"))?;
            if context.json() {
                return output::json(&subjects);
            }
            subjects.iter().try_for_each(output::line)
        }
        SchemasCommand::Register { subject, file } => {
            let schema = read_schema(&file)?;
            let registered = client
                .register_schema(&subject, &schema)
                .await
                .with_context(|| format!("register {}", name(&subject)))?;
            if context.json() {
                return output::json(&registered.version);
            }
            let verb = if registered.created {
                "registered"
            } else {
                "already registered"
            };
            output::line(format!(
                "{verb} {} version {}",
                name(&subject),
                registered.version.version
            ))
        }
        SchemasCommand::Versions { subject } => {
            let versions = client
                .list_schema_versions(&subject)
                .await
                .with_context(|| format!("list the versions of {}", name(&subject)))?;
            if context.json() {
                return output::json(&versions);
            }
            versions.iter().try_for_each(output::line)
        }
        SchemasCommand::Show { subject, version } => {
            let found = client
                .get_schema_version(&subject, version)
                .await
                .with_context(|| format!("read {} version {version}", name(&subject)))?;
            if context.json() {
                output::json(&found)
            } else {
                output::json(&found.schema)
            }
        }
        SchemasCommand::Check { subject, file } => {
            let schema = read_schema(&file)?;
            let check = client
                .check_schema(&subject, &schema)
                .await
                .with_context(|| format!("check against {}", name(&subject)))?;
            if context.json() {
                output::json(
                    &json!({ "compatible": check.compatible, "messages": check.messages }),
                )?;
            } else if check.compatible {
                output::line("compatible")?;
            } else {
                check.messages.iter().try_for_each(output::line)?;
            }
            // An incompatible schema fails the run, for scripts.
            anyhow::ensure!(
                check.compatible,
                "the schema is not compatible with {}",
                name(&subject)
            );
            Ok(())
        }
        SchemasCommand::Config { subject, set } => {
            let mode = match set {
                Some(mode) => {
                    client
                        .set_schema_compatibility(&subject, mode)
                        .await
                        .with_context(|| format!("configure {}", name(&subject)))?;
                    mode
                }
                None => client
                    .schema_compatibility(&subject)
                    .await
                    .with_context(|| format!("read the mode of {}", name(&subject)))?,
            };
            let mode = serde_json::to_value(mode)?;
            if context.json() {
                output::json(&json!({ "compatibility": mode }))
            } else {
                output::line(mode.as_str().unwrap_or_default())
            }
        }
        SchemasCommand::Rm { subject, version } => {
            client
                .delete_schema_version(&subject, version)
                .await
                .with_context(|| format!("delete {} version {version}", name(&subject)))?;
            if context.json() {
                output::json(
                    &json!({ "deleted": { "subject": name(&subject), "version": version } }),
                )
            } else {
                output::line(format!("deleted {} version {version}", name(&subject)))
            }
        }
    }
}

fn name(subject: &SubjectRef) -> String {
    format!(
        "{}.{}.{}",
        subject.namespace, subject.tenant, subject.subject
    )
}

/// The JSON in `file`, or on stdin for `-`.
fn read_schema(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the schema from stdin")?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|error| UsageError(format!("cannot read {file}: {error}")))?
    };
    serde_json::from_str(&text)
        .map_err(|error| UsageError(format!("{file} is not JSON: {error}")).into())
}
