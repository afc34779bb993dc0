//! `acteon rules ls`: the loaded rules, in evaluation order.

use anyhow::Context as _;

use super::Context;
use crate::args::RulesCommand;
use crate::output;

pub(super) async fn run(context: &Context, command: RulesCommand) -> anyhow::Result<()> {
    let RulesCommand::Ls = command;
    let rules = context.client()?.list_rules().await.context("list rules")?;
    if context.json() {
        return output::json(&rules);
    }
    output::table(
        &[
            "NAME",
            "PRIORITY",
            "ACTION",
            "TENANT",
            "NAMESPACE",
            "TOPIC",
            "CONDITION",
            "REASON",
        ],
        rules.iter().map(|rule| {
            [
                rule.name.clone(),
                rule.priority.to_string(),
                rule.action.clone(),
                output::or_dash(rule.tenant.as_deref()),
                output::or_dash(rule.namespace.as_deref()),
                output::or_dash(rule.topic.as_deref()),
                rule.condition.clone(),
                output::or_dash(rule.reason.as_deref()),
            ]
        }),
    )
}
