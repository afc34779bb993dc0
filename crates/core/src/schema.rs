//! The wire types of the schema registry: compatibility modes, versions,
//! and the binding of a topic to a subject.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name::{Fragment, FragmentKind, NameError};

/// How a subject's new versions must relate to its earlier ones, with the
/// meanings Confluent's registry gives them: `backward` means the new
/// version accepts every document the previous one did, `forward` the
/// reverse, `full` both; the `_transitive` forms compare against every
/// version kept, not only the latest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    pub fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    pub fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

/// One version of a subject, as the registry stores and answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaVersion {
    pub subject: String,
    pub version: u32,
    /// A JSON Schema, draft 2020-12: an object or a boolean.
    pub schema: serde_json::Value,
    pub registered_at: DateTime<Utc>,
}

/// A version of a subject: a number, or whichever is the latest when a
/// record is published. On the wire, a number or `"latest"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaVersionRef {
    Number(u32),
    Latest,
}

impl fmt::Display for SchemaVersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Latest => f.write_str("latest"),
        }
    }
}

/// Why a version reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {0:?} is neither a positive number nor \"latest\"")]
pub struct SchemaVersionRefError(pub String);

impl FromStr for SchemaVersionRef {
    type Err = SchemaVersionRefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "latest" => Ok(Self::Latest),
            number => number
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .map(Self::Number)
                .ok_or_else(|| SchemaVersionRefError(number.to_owned())),
        }
    }
}

impl Serialize for SchemaVersionRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Number(n) => serializer.serialize_u32(*n),
            Self::Latest => serializer.serialize_str("latest"),
        }
    }
}

impl<'de> Deserialize<'de> for SchemaVersionRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Number(u64),
            Text(String),
        }
        let text = match Wire::deserialize(deserializer)? {
            Wire::Number(n) => n.to_string(),
            Wire::Text(text) => text,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for SchemaVersionRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["latest"])),
            )
            .description(Some("A version number, or `latest`"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for SchemaVersionRef {}

/// A topic's schema: a subject of the topic's own namespace and tenant, at
/// one version or the latest. Every record produced to the topic must be
/// valid under it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SchemaBinding {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::Fragment))]
    pub subject: String,
    pub version: SchemaVersionRef,
}

impl SchemaBinding {
    /// Refuses a subject that is not a valid name.
    pub fn check(&self) -> Result<(), NameError> {
        Fragment::parse(FragmentKind::Name, &self.subject).map(drop)
    }
}

impl fmt::Display for SchemaBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.subject, self.version)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_version_is_a_positive_number_or_latest() {
        let binding: SchemaBinding =
            serde_json::from_value(json!({ "subject": "calls", "version": 3 })).unwrap();
        assert_eq!(binding.version, SchemaVersionRef::Number(3));
        let latest: SchemaBinding =
            serde_json::from_value(json!({ "subject": "calls", "version": "latest" })).unwrap();
        assert_eq!(latest.to_string(), "calls:latest");
        assert_eq!(
            serde_json::to_value(&latest).unwrap(),
            json!({ "subject": "calls", "version": "latest" })
        );
        for bad in [json!(0), json!(-1), json!("first"), json!(1.5), json!(null)] {
            let refused =
                serde_json::from_value::<SchemaBinding>(json!({ "subject": "s", "version": bad }));
            assert!(refused.is_err(), "{bad}");
        }
        assert_eq!("7".parse(), Ok(SchemaVersionRef::Number(7)));
        assert!("0".parse::<SchemaVersionRef>().is_err());
    }
}
