//! Scopes: the set of topics something concerns.
//!
//! A grant, a silence, a quota, a rule, a topic listing and an audit query
//! each name a namespace, a tenant and a topic, any of which may be left
//! open. One type answers for all of them the two questions that matter:
//! does a scope cover this topic, and does one scope contain another (a
//! grant must contain what a request asks for).

use std::fmt;

use thiserror::Error;

use crate::{Fragment, FragmentKind, NameError, TopicName};

/// What a grant writes for "any namespace" or "any tenant".
pub const WILDCARD: &str = "*";

/// One part of a scope: a fragment, or any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    Any,
    Exact(Fragment),
}

impl Pattern {
    /// `None` is any; a value must be a valid fragment of `kind`.
    pub fn parse(kind: FragmentKind, value: Option<&str>) -> Result<Self, NameError> {
        value
            .map(|value| Fragment::parse(kind, value).map(Self::Exact))
            .transpose()
            .map(|pattern| pattern.unwrap_or(Self::Any))
    }

    /// Like [`Pattern::parse`], with [`WILDCARD`] for any.
    pub fn parse_wildcard(kind: FragmentKind, value: &str) -> Result<Self, NameError> {
        Self::parse(kind, Some(value).filter(|value| *value != WILDCARD))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(fragment) => fragment.as_str() == value,
        }
    }

    /// Whether every value `other` matches, this matches too.
    fn contains(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (Self::Exact(_), Self::Any) => false,
            (Self::Exact(mine), Self::Exact(theirs)) => mine == theirs,
        }
    }

    /// The values both match, or `None` when no value does.
    fn intersect(&self, other: &Self) -> Option<Self> {
        match (self, other) {
            (Self::Any, other) | (other, Self::Any) => Some(other.clone()),
            (Self::Exact(mine), Self::Exact(theirs)) => (mine == theirs).then(|| self.clone()),
        }
    }

    /// The fragment, when exact.
    pub fn exact(&self) -> Option<&str> {
        match self {
            Self::Any => None,
            Self::Exact(fragment) => Some(fragment.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.exact().unwrap_or(WILDCARD))
    }
}

/// Topics by namespace, tenant and short name, each exact or any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub namespace: Pattern,
    pub tenant: Pattern,
    pub name: Pattern,
}

/// Two scopes that no topic is in, as they are written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("no topic is in both {0} and {1}")]
pub struct DisjointScopes(pub String, pub String);

impl Scope {
    /// Every topic.
    pub fn all() -> Self {
        Self {
            namespace: Pattern::Any,
            tenant: Pattern::Any,
            name: Pattern::Any,
        }
    }

    /// The scope of optional fragments (`None`: any), each checked.
    pub fn new(
        namespace: Option<&str>,
        tenant: Option<&str>,
        name: Option<&str>,
    ) -> Result<Self, NameError> {
        Ok(Self {
            namespace: Pattern::parse(FragmentKind::Namespace, namespace)?,
            tenant: Pattern::parse(FragmentKind::Tenant, tenant)?,
            name: Pattern::parse(FragmentKind::Name, name)?,
        })
    }

    /// Exactly one topic.
    pub fn topic(topic: &TopicName) -> Self {
        let [namespace, tenant, name] = topic.fragments().map(Pattern::Exact);
        Self {
            namespace,
            tenant,
            name,
        }
    }

    /// Whether the topic `namespace.tenant.name` is in this scope.
    pub fn covers(&self, namespace: &str, tenant: &str, name: &str) -> bool {
        self.namespace.matches(namespace) && self.tenant.matches(tenant) && self.name.matches(name)
    }

    pub fn covers_topic(&self, topic: &TopicName) -> bool {
        self.covers(topic.namespace(), topic.tenant(), topic.name())
    }

    /// Whether every topic in `other` is in this scope too.
    pub fn contains(&self, other: &Self) -> bool {
        self.namespace.contains(&other.namespace)
            && self.tenant.contains(&other.tenant)
            && self.name.contains(&other.name)
    }

    /// The topics in both scopes.
    pub fn intersect(&self, other: &Self) -> Result<Self, DisjointScopes> {
        let disjoint = || DisjointScopes(self.to_string(), other.to_string());
        Ok(Self {
            namespace: self
                .namespace
                .intersect(&other.namespace)
                .ok_or_else(disjoint)?,
            tenant: self.tenant.intersect(&other.tenant).ok_or_else(disjoint)?,
            name: self.name.intersect(&other.name).ok_or_else(disjoint)?,
        })
    }
}

impl fmt::Display for Scope {
    /// `namespace.tenant.name`, `*` for an open part.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.namespace, self.tenant, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(namespace: Option<&str>, tenant: Option<&str>, name: Option<&str>) -> Scope {
        Scope::new(namespace, tenant, name).unwrap()
    }

    #[test]
    fn a_scope_covers_the_topics_its_exact_parts_name() {
        let topic = TopicName::new("agents", "alpha", "inbox").unwrap();
        assert!(Scope::all().covers_topic(&topic));
        assert!(scope(None, Some("alpha"), None).covers_topic(&topic));
        assert!(scope(Some("agents"), Some("alpha"), Some("inbox")).covers_topic(&topic));
        assert!(!scope(None, Some("beta"), None).covers_topic(&topic));
        assert!(!scope(Some("agents"), None, Some("outbox")).covers_topic(&topic));
    }

    #[test]
    fn containment_needs_every_open_part_open() {
        let tenant = scope(None, Some("alpha"), None);
        let topic = Scope::topic(&TopicName::new("agents", "alpha", "inbox").unwrap());
        assert!(tenant.contains(&topic));
        assert!(!topic.contains(&tenant));
        assert!(
            !tenant.contains(&Scope::all()),
            "one tenant is not all tenants"
        );
        assert!(Scope::all().contains(&tenant));
        assert!(!tenant.contains(&scope(None, Some("beta"), None)));
    }

    #[test]
    fn intersection_narrows_or_reports_disjoint_scopes() {
        let topic = Scope::topic(&TopicName::new("agents", "alpha", "inbox").unwrap());
        let tenant = scope(None, Some("alpha"), None);
        assert_eq!(tenant.intersect(&topic).unwrap(), topic);
        assert_eq!(topic.intersect(&Scope::all()).unwrap(), topic);
        let other = scope(None, Some("beta"), None);
        assert!(topic.intersect(&other).is_err());
    }

    #[test]
    fn wildcards_and_invalid_fragments() {
        assert_eq!(
            Pattern::parse_wildcard(FragmentKind::Tenant, "*").unwrap(),
            Pattern::Any
        );
        assert!(Pattern::parse_wildcard(FragmentKind::Tenant, "a.b").is_err());
        assert_eq!(scope(None, Some("alpha"), None).to_string(), "*.alpha.*");
    }
}
