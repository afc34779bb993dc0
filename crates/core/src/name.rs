//! Topic names: the three fragments and the Kafka name they form.
//!
//! A topic is addressed as `{namespace}.{tenant}.{name}`. The dot is the
//! separator, so it may never appear inside a fragment; that makes the
//! mapping between the triple and the Kafka name one-to-one, which is what
//! keeps two tenants' topics apart at the transport layer.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest allowed fragment, in characters.
const MAX_FRAGMENT_LEN: usize = 80;

/// Which part of a topic name a fragment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentKind {
    Namespace,
    Tenant,
    Name,
    /// Not part of a topic name: a durable subscription's id, held to the
    /// same rules.
    Subscription,
}

impl fmt::Display for FragmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Namespace => "namespace",
            Self::Tenant => "tenant",
            Self::Name => "name",
            Self::Subscription => "subscription id",
        })
    }
}

/// Why a topic name, or one of its fragments, was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{kind} must not be empty")]
    Empty { kind: FragmentKind },
    #[error("{kind} is {len} characters long; at most {MAX_FRAGMENT_LEN} are allowed")]
    TooLong { kind: FragmentKind, len: usize },
    #[error(
        "{kind} {value:?} contains '.', which is reserved as the separator of a Kafka topic name"
    )]
    ContainsDot { kind: FragmentKind, value: String },
    #[error(
        "{kind} {value:?} contains {character:?}; only ASCII letters, digits, '_' and '-' are allowed"
    )]
    InvalidCharacter {
        kind: FragmentKind,
        value: String,
        character: char,
    },
    #[error("{value:?} is not a Kafka topic name of the form namespace.tenant.name")]
    NotThreeFragments { value: String },
}

impl NameError {
    /// The fragment that was wrong, when the error concerns a single one.
    pub fn fragment(&self) -> Option<FragmentKind> {
        match self {
            Self::Empty { kind }
            | Self::TooLong { kind, .. }
            | Self::ContainsDot { kind, .. }
            | Self::InvalidCharacter { kind, .. } => Some(*kind),
            Self::NotThreeFragments { .. } => None,
        }
    }
}

/// One validated fragment: `[a-zA-Z0-9_-]{1,80}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fragment(String);

impl Fragment {
    pub fn parse(kind: FragmentKind, value: &str) -> Result<Self, NameError> {
        Self::check(kind, value)?;
        Ok(Self(value.to_owned()))
    }

    /// Whether `value` is a valid fragment, without keeping it.
    fn check(kind: FragmentKind, value: &str) -> Result<(), NameError> {
        if value.is_empty() {
            return Err(NameError::Empty { kind });
        }
        let len = value.chars().count();
        if len > MAX_FRAGMENT_LEN {
            return Err(NameError::TooLong { kind, len });
        }
        if let Some(character) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            let value = value.to_owned();
            return Err(if character == '.' {
                NameError::ContainsDot { kind, value }
            } else {
                NameError::InvalidCharacter {
                    kind,
                    value,
                    character,
                }
            });
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic's identity: namespace, tenant and short name.
///
/// It serialises as its Kafka name (`namespace.tenant.name`), which it
/// keeps whole: every publish names its Kafka topic, and a clone is a
/// reference count.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName {
    kafka_name: Arc<str>,
    /// Where the tenant and the short name start in `kafka_name`.
    tenant_at: usize,
    name_at: usize,
}

impl TopicName {
    pub fn new(namespace: &str, tenant: &str, name: &str) -> Result<Self, NameError> {
        Self::checked(namespace, tenant, name, || {
            [namespace, ".", tenant, ".", name].concat().into()
        })
    }

    /// Checks the fragments, then takes `kafka_name`, their join: a parsed
    /// name keeps the text it was parsed from instead of building it again.
    fn checked(
        namespace: &str,
        tenant: &str,
        name: &str,
        kafka_name: impl FnOnce() -> Arc<str>,
    ) -> Result<Self, NameError> {
        Fragment::check(FragmentKind::Namespace, namespace)?;
        Fragment::check(FragmentKind::Tenant, tenant)?;
        Fragment::check(FragmentKind::Name, name)?;
        let tenant_at = namespace.len() + 1;
        Ok(Self {
            kafka_name: kafka_name(),
            tenant_at,
            name_at: tenant_at + tenant.len() + 1,
        })
    }

    /// The three fragments: namespace, tenant, name.
    pub(crate) fn fragments(&self) -> [Fragment; 3] {
        [self.namespace(), self.tenant(), self.name()].map(|part| Fragment(part.to_owned()))
    }

    pub fn namespace(&self) -> &str {
        &self.kafka_name[..self.tenant_at - 1]
    }

    pub fn tenant(&self) -> &str {
        &self.kafka_name[self.tenant_at..self.name_at - 1]
    }

    pub fn name(&self) -> &str {
        &self.kafka_name[self.name_at..]
    }

    /// The Kafka topic that holds this topic's records.
    pub fn kafka_topic_name(&self) -> &str {
        &self.kafka_name
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TopicName").field(&self.kafka_name).finish()
    }
}

/// Fragment by fragment, as the triple orders: a shorter fragment before a
/// longer one it begins, whatever follows the dot.
impl Ord for TopicName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.namespace(), self.tenant(), self.name()).cmp(&(
            other.namespace(),
            other.tenant(),
            other.name(),
        ))
    }
}

impl PartialOrd for TopicName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kafka_name)
    }
}

impl FromStr for TopicName {
    type Err = NameError;

    /// Parses a Kafka topic name back into its three fragments.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut parts = value.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(namespace), Some(tenant), Some(name), None) => {
                Self::checked(namespace, tenant, name, || value.into())
            }
            _ => Err(NameError::NotThreeFragments {
                value: value.to_owned(),
            }),
        }
    }
}

impl TryFrom<String> for TopicName {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> Self {
        name.kafka_name.as_ref().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_name_joins_the_fragments_with_dots() {
        let name = TopicName::new("agents", "demo", "inbox-xyz_1").unwrap();
        assert_eq!(name.kafka_topic_name(), "agents.demo.inbox-xyz_1");
        assert_eq!(name.namespace(), "agents");
        assert_eq!(name.tenant(), "demo");
        assert_eq!(name.name(), "inbox-xyz_1");
    }

    #[test]
    fn kafka_name_parses_back_into_the_same_triple() {
        let name = TopicName::new("a", "B-2", "c_3").unwrap();
        assert_eq!(name.kafka_topic_name().parse::<TopicName>().unwrap(), name);
    }

    #[test]
    fn names_order_by_fragment_not_by_kafka_name() {
        // As Kafka names, "a-b.x.n" sorts before "a.x.n": '-' is below '.'.
        let short = TopicName::new("a", "x", "n").unwrap();
        let long = TopicName::new("a-b", "x", "n").unwrap();
        assert!(short < long);
        assert_eq!(long.namespace(), "a-b");
        assert_eq!(long.tenant(), "x");
        assert_eq!(long.name(), "n");
    }

    #[test]
    fn same_short_name_of_two_tenants_gives_two_kafka_topics() {
        let a = TopicName::new("agents", "acme", "inbox").unwrap();
        let b = TopicName::new("agents", "globex", "inbox").unwrap();
        assert_ne!(a.kafka_topic_name(), b.kafka_topic_name());
    }

    #[test]
    fn each_fragment_names_itself_in_the_error() {
        let cases = [
            (("", "t", "n"), FragmentKind::Namespace),
            (("n", "t.x", "n"), FragmentKind::Tenant),
            (("n", "t", "a b"), FragmentKind::Name),
        ];
        for ((namespace, tenant, name), kind) in cases {
            let err = TopicName::new(namespace, tenant, name).unwrap_err();
            assert_eq!(err.fragment(), Some(kind), "{err}");
            assert!(err.to_string().starts_with(&kind.to_string()), "{err}");
        }
    }

    #[test]
    fn dots_are_rejected_with_their_own_reason() {
        let err = Fragment::parse(FragmentKind::Tenant, "a.b").unwrap_err();
        assert!(matches!(err, NameError::ContainsDot { .. }));
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn fragment_length_is_bounded_at_eighty() {
        assert!(Fragment::parse(FragmentKind::Name, &"x".repeat(80)).is_ok());
        assert_eq!(
            Fragment::parse(FragmentKind::Name, &"x".repeat(81)).unwrap_err(),
            NameError::TooLong {
                kind: FragmentKind::Name,
                len: 81
            }
        );
    }

    #[test]
    fn non_ascii_letters_are_rejected() {
        let err = Fragment::parse(FragmentKind::Name, "café").unwrap_err();
        assert!(matches!(
            err,
            NameError::InvalidCharacter {
                character: 'é', ..
            }
        ));
    }

    #[test]
    fn kafka_names_need_exactly_three_fragments() {
        for bad in ["a.b", "a.b.c.d", "abc", "", "a..c"] {
            assert!(bad.parse::<TopicName>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn serialises_as_the_kafka_name() {
        let name = TopicName::new("a", "b", "c").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"a.b.c\"");
        let back: TopicName = serde_json::from_str("\"a.b.c\"").unwrap();
        assert_eq!(back, name);
        assert!(serde_json::from_str::<TopicName>("\"a.b\"").is_err());
    }
}

/// The schemas of names in the server's OpenAPI document: the rules above,
/// as patterns.
#[cfg(feature = "openapi")]
mod schema {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    use super::{Fragment, TopicName};

    impl utoipa::PartialSchema for Fragment {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9_-]{1,80}$"))
                .description(Some("1 to 80 ASCII letters, digits, '_' or '-'"))
                .into()
        }
    }

    impl utoipa::ToSchema for Fragment {}

    impl utoipa::PartialSchema for TopicName {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(
                    "^[A-Za-z0-9_-]{1,80}\\.[A-Za-z0-9_-]{1,80}\\.[A-Za-z0-9_-]{1,80}$",
                ))
                .description(Some("A Kafka topic name, `{namespace}.{tenant}.{name}`"))
                .into()
        }
    }

    impl utoipa::ToSchema for TopicName {}
}
