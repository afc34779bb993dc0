//! Rules: ordered CEL conditions with an action; the first that holds decides.

use acteon_core::Scope;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::condition::{Condition, ConditionError, MessageFacts};

/// What a rule does with a message its condition holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Deny,
    Suppress,
}

impl std::str::FromStr for RuleAction {
    type Err = ();

    fn from_str(action: &str) -> Result<Self, ()> {
        match action {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            "suppress" => Ok(Self::Suppress),
            _ => Err(()),
        }
    }
}

/// A `[[rules]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Lower runs first.
    pub priority: i64,
    pub condition: String,
    /// `allow`, `deny` or `suppress`; checked when the rules are loaded, so
    /// the error can name the rule.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The tenant whose publishes the rule concerns; none: every tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Narrows the rule to a namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Narrows the rule to a topic (short name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// A rule set that cannot be loaded.
#[derive(Debug, Error)]
pub enum RuleError {
    #[error("rule {name:?}: {source}")]
    Condition {
        name: String,
        source: ConditionError,
    },
    #[error("rule {name:?}: unknown action {action:?} (allow, deny or suppress)")]
    UnknownAction { name: String, action: String },
    #[error("rule name {0:?} is used twice")]
    DuplicateName(String),
    #[error("rule {name:?}: {source}")]
    Scope {
        name: String,
        source: acteon_core::NameError,
    },
}

/// A loaded rule.
#[derive(Debug)]
pub struct Rule {
    pub config: RuleConfig,
    pub action: RuleAction,
    /// The publishes it concerns.
    pub scope: Scope,
    condition: Condition,
}

/// The loaded rules, in evaluation order (priority, then file order).
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn compile(configs: &[RuleConfig]) -> Result<Self, RuleError> {
        let mut names = std::collections::HashSet::new();
        let mut rules = Vec::with_capacity(configs.len());
        for config in configs {
            if !names.insert(config.name.as_str()) {
                return Err(RuleError::DuplicateName(config.name.clone()));
            }
            let condition =
                Condition::compile(&config.condition).map_err(|source| RuleError::Condition {
                    name: config.name.clone(),
                    source,
                })?;
            let action = config
                .action
                .parse()
                .map_err(|()| RuleError::UnknownAction {
                    name: config.name.clone(),
                    action: config.action.clone(),
                })?;
            let scope = Scope::new(
                config.namespace.as_deref(),
                config.tenant.as_deref(),
                config.topic.as_deref(),
            )
            .map_err(|source| RuleError::Scope {
                name: config.name.clone(),
                source,
            })?;
            rules.push(Rule {
                config: config.clone(),
                action,
                scope,
                condition,
            });
        }
        // A stable sort keeps file order among equal priorities.
        rules.sort_by_key(|rule| rule.config.priority);
        Ok(Self { rules })
    }

    /// The first rule concerning `message` whose condition holds.
    pub fn decide(&self, message: &MessageFacts<'_>) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|rule| rule.scope.covers_topic(message.topic) && rule.condition.holds(message))
    }

    /// The rules whose scope `visible` accepts, in evaluation order.
    pub fn list(&self, visible: impl Fn(&Scope) -> bool) -> Vec<&RuleConfig> {
        self.rules
            .iter()
            .filter(|rule| visible(&rule.scope))
            .map(|rule| &rule.config)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use acteon_core::{Headers, TopicName};
    use serde_json::json;

    use super::*;

    fn rule(name: &str, priority: i64, condition: &str, action: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            priority,
            condition: condition.into(),
            action: action.into(),
            reason: None,
            tenant: None,
            namespace: None,
            topic: None,
        }
    }

    #[test]
    fn the_first_matching_rule_by_priority_decides() {
        let rules = RuleSet::compile(&[
            rule("late", 20, "true", "allow"),
            rule("big", 10, "payload.amount > 1000", "deny"),
            rule("tie", 20, "true", "suppress"),
        ])
        .unwrap();
        let names: Vec<_> = rules
            .list(|_| true)
            .iter()
            .map(|r| r.name.clone())
            .collect();
        assert_eq!(names, ["big", "late", "tie"]);
        let topic = TopicName::new("a", "b", "c").unwrap();
        let headers = Headers::new();
        let big = json!({ "amount": 5000 });
        let small = json!({ "amount": 5 });
        let decide = |payload| {
            rules
                .decide(&MessageFacts::new(&topic, None, &headers, payload))
                .map(|r| r.config.name.clone())
        };
        assert_eq!(decide(&big).as_deref(), Some("big"));
        assert_eq!(decide(&small).as_deref(), Some("late"));
    }

    #[test]
    fn a_scoped_rule_concerns_only_its_tenant() {
        let mut scoped = rule("demo-only", 1, "true", "deny");
        scoped.tenant = Some("demo".into());
        let rules = RuleSet::compile(&[scoped]).unwrap();
        let (headers, payload) = (Headers::new(), json!({}));
        let demo = TopicName::new("a", "demo", "c").unwrap();
        let other = TopicName::new("a", "other", "c").unwrap();
        assert!(
            rules
                .decide(&MessageFacts::new(&demo, None, &headers, &payload))
                .is_some()
        );
        assert!(
            rules
                .decide(&MessageFacts::new(&other, None, &headers, &payload))
                .is_none()
        );
        let other_scope = Scope::new(None, Some("other"), None).unwrap();
        assert!(rules.list(|scope| other_scope.contains(scope)).is_empty());
    }

    #[test]
    fn a_bad_condition_names_its_rule() {
        let error = RuleSet::compile(&[rule("broken", 1, "payload.(", "deny")]).unwrap_err();
        assert!(error.to_string().starts_with("rule \"broken\""), "{error}");
    }

    #[test]
    fn names_are_unique() {
        let twice = [rule("x", 1, "true", "allow"), rule("x", 2, "true", "deny")];
        assert!(matches!(
            RuleSet::compile(&twice),
            Err(RuleError::DuplicateName(_))
        ));
    }

    #[test]
    fn an_unknown_action_names_its_rule() {
        let error = RuleSet::compile(&[rule("odd", 1, "true", "drop")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "rule \"odd\": unknown action \"drop\" (allow, deny or suppress)"
        );
    }
}
