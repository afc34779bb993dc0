//! Subjects of JSON Schemas, per namespace and tenant: their versions,
//! compatibility modes, and a compiled validator for every version.
//!
//! A subject is one state-store record holding all its versions, so a
//! registration is one write. Every subject is kept in memory with its
//! validators, compiled once when a version is registered or loaded,
//! never per publish.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use acteon_core::{
    Compatibility, Fragment, FragmentKind, NameError, SchemaVersion, SchemaVersionRef, TopicName,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::compatibility::accepts_all_of;
use crate::state::{KeyKind, StateError, StateStore};

/// The largest schema stored, as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// The most versions a subject keeps at once.
pub const MAX_VERSIONS: usize = 1_000;
/// The most reasons a refusal lists.
const MAX_REASONS: usize = 20;

/// Why `new` may not follow `earlier` (oldest first) in `mode`.
fn refusals(mode: Compatibility, new: &Value, earlier: &[&Value]) -> Vec<String> {
    let compared: &[&Value] = match earlier.split_last() {
        Some((latest, _)) if !mode.transitive() => std::slice::from_ref(latest),
        _ => earlier,
    };
    let mut reasons = Vec::new();
    for old in compared {
        if mode.backward() {
            reasons.extend(
                accepts_all_of(new, old)
                    .into_iter()
                    .map(|reason| format!("backward: {reason}")),
            );
        }
        if mode.forward() {
            reasons.extend(
                accepts_all_of(old, new)
                    .into_iter()
                    .map(|reason| format!("forward: {reason}")),
            );
        }
    }
    reasons.dedup();
    reasons.truncate(MAX_REASONS);
    reasons
}
/// What a registry operation refused.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("invalid schema: {0}")]
    Invalid(String),
    #[error("the schema is not compatible with subject {subject} ({mode:?}): {}", reasons.join("; "))]
    Incompatible {
        subject: String,
        mode: Compatibility,
        reasons: Vec<String>,
    },
    #[error("subject {subject} does not exist")]
    SubjectNotFound { subject: String },
    #[error("subject {subject} has no version {version}")]
    VersionNotFound { subject: String, version: String },
    #[error("subject {subject} keeps {MAX_VERSIONS} versions at most; delete one first")]
    TooManyVersions { subject: String },
    /// A tenant's subjects or their bytes at their limit.
    #[error("{0}")]
    LimitReached(String),
    #[error("version {version} of subject {subject} is bound to a topic; unbind it first")]
    InUse { subject: String, version: u32 },
    /// A topic's binding names a version that is gone, which the registry
    /// does not allow; only a damaged state store gets here.
    #[error(
        "topic {topic} is bound to schema {binding}, which does not exist; bind the topic again"
    )]
    Dangling { topic: String, binding: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// A subject's address: namespace, tenant and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectName {
    pub namespace: Fragment,
    pub tenant: Fragment,
    pub subject: Fragment,
}

impl SubjectName {
    pub fn parse(namespace: &str, tenant: &str, subject: &str) -> Result<Self, NameError> {
        Ok(Self {
            namespace: Fragment::parse(FragmentKind::Namespace, namespace)?,
            tenant: Fragment::parse(FragmentKind::Tenant, tenant)?,
            subject: Fragment::parse(FragmentKind::Name, subject)?,
        })
    }

    /// A subject of `topic`'s namespace and tenant: a topic binds only
    /// its own tenant's subjects.
    pub fn of_topic(topic: &TopicName, subject: &str) -> Result<Self, NameError> {
        Self::parse(topic.namespace(), topic.tenant(), subject)
    }

    /// The state-store id.
    fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.tenant, self.subject)
    }
}

/// A subject as stored: its mode, its versions (oldest first) and the
/// next number to give, which only grows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSubject {
    namespace: String,
    tenant: String,
    subject: String,
    compatibility: Compatibility,
    next_version: u32,
    versions: Vec<SchemaVersion>,
}

/// A subject in memory, with a validator per version.
#[derive(Debug)]
struct Subject {
    stored: StoredSubject,
    validators: BTreeMap<u32, Arc<jsonschema::Validator>>,
    /// The JSON text of the kept versions, in bytes.
    bytes: usize,
}

/// What one tenant's registry may hold.
#[derive(Debug, Clone, Copy)]
pub struct SchemaLimits {
    pub max_subjects_per_tenant: usize,
    pub max_bytes_per_tenant: usize,
}

impl From<&crate::limits::LimitsConfig> for SchemaLimits {
    fn from(limits: &crate::limits::LimitsConfig) -> Self {
        Self {
            max_subjects_per_tenant: limits.max_schema_subjects_per_tenant,
            max_bytes_per_tenant: limits.max_schema_bytes_per_tenant,
        }
    }
}

/// A schema's size as stored: its JSON text.
fn size_of(schema: &Value) -> usize {
    serde_json::to_string(schema).map_or(0, |text| text.len())
}

/// A version's validator, for the publish paths.
#[derive(Debug, Clone)]
pub struct Bound {
    pub subject: String,
    pub version: u32,
    pub validator: Arc<jsonschema::Validator>,
}

/// The most issues a refused payload's answer lists.
pub const MAX_ISSUES: usize = 10;
/// The longest issue message, in bytes: a message quotes the offending
/// value, and sometimes the schema's, which may be large.
const MAX_ISSUE_BYTES: usize = 256;

/// One reason a payload does not match its schema.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Issue {
    /// A JSON Pointer to the offending value; empty for the payload itself.
    pub path: String,
    pub message: String,
}

/// A payload its topic's schema refused, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the payload does not match schema {subject} version {version}: {}",
    describe(issues)
)]
pub struct Violation {
    pub subject: String,
    pub version: u32,
    pub issues: Vec<Issue>,
}

/// `text` cut to [`MAX_ISSUE_BYTES`], marked where it was cut.
fn shortened(mut text: String) -> String {
    if text.len() > MAX_ISSUE_BYTES {
        let mut end = MAX_ISSUE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn describe(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|issue| match issue.path.as_str() {
            "" => issue.message.clone(),
            path => format!("{path}: {}", issue.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Bound {
    /// Ok if `payload` is valid; else the first [`MAX_ISSUES`] issues.
    pub fn check(&self, payload: &Value) -> Result<(), Box<Violation>> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let issues = self
            .validator
            .iter_errors(payload)
            .take(MAX_ISSUES)
            .map(|error| Issue {
                path: shortened(error.instance_path().to_string()),
                message: shortened(error.to_string()),
            })
            .collect();
        Err(Box::new(Violation {
            subject: self.subject.clone(),
            version: self.version,
            issues,
        }))
    }

    /// The value of a produced record's `acteon.schema` header.
    pub fn header(&self) -> String {
        format!("{}:{}", self.subject, self.version)
    }
}

/// Compiles `schema` as draft 2020-12, refusing what is not a valid
/// schema. Publish and the compatibility check use validators built here
/// alone, so they agree on what a schema accepts.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, SchemaError> {
    let size = size_of(schema);
    if size > MAX_SCHEMA_BYTES {
        return Err(SchemaError::Invalid(format!(
            "the schema is {size} bytes; at most {MAX_SCHEMA_BYTES} are allowed"
        )));
    }
    if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
        return Err(SchemaError::Invalid(
            "a schema is a JSON object or a boolean".to_owned(),
        ));
    }
    if let Some(dialect) = schema.get("$schema").and_then(Value::as_str)
        && dialect.trim_end_matches('#') != "https://json-schema.org/draft/2020-12/schema"
    {
        return Err(SchemaError::Invalid(format!(
            "$schema {dialect:?}: only draft 2020-12 is accepted"
        )));
    }
    if let Some(at) = nested_dialect(schema, "") {
        return Err(SchemaError::Invalid(format!(
            "$schema at {at}: only the root may name the dialect"
        )));
    }
    jsonschema::meta::validate(schema)
        .map_err(|error| SchemaError::Invalid(format!("{} at {}", error, error.instance_path())))?;
    jsonschema::draft202012::new(schema).map_err(|error| SchemaError::Invalid(error.to_string()))
}

/// Where a subschema below the root names a dialect of its own, which
/// would compile that part under another draft than the compatibility
/// check assumes. Values (`const`, `enum`, `default`, `examples`) and
/// the names in keyword maps (`properties`, ...) are not schemas and are
/// not looked at.
fn nested_dialect(schema: &Value, at: &str) -> Option<String> {
    const VALUES: [&str; 4] = ["const", "enum", "default", "examples"];
    const MAPS: [&str; 5] = [
        "properties",
        "patternProperties",
        "$defs",
        "definitions",
        "dependentSchemas",
    ];
    let Value::Object(keywords) = schema else {
        return None;
    };
    if !at.is_empty() && keywords.contains_key("$schema") {
        return Some(at.to_owned());
    }
    keywords.iter().find_map(|(keyword, value)| {
        let here = format!("{at}/{keyword}");
        match value {
            _ if VALUES.contains(&keyword.as_str()) => None,
            Value::Object(map) if MAPS.contains(&keyword.as_str()) => map
                .iter()
                .find_map(|(name, subschema)| nested_dialect(subschema, &format!("{here}/{name}"))),
            Value::Object(_) => nested_dialect(value, &here),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(index, item)| nested_dialect(item, &format!("{here}/{index}"))),
            _ => None,
        }
    })
}

/// A schema compiled, and why its subject's mode refuses it.
struct Judged {
    schema: Value,
    validator: Arc<jsonschema::Validator>,
    reasons: Vec<String>,
}

/// Compiles `schema` and compares it with the versions of `subject` in
/// its mode, on the blocking pool: both take time that grows with the
/// schemas, which must not hold up a runtime thread.
async fn judge(schema: Value, subject: Option<StoredSubject>) -> Result<Judged, SchemaError> {
    let judging = tokio::task::spawn_blocking(move || {
        let validator = Arc::new(compile(&schema)?);
        let reasons = subject.map_or_else(Vec::new, |subject| {
            let earlier: Vec<&Value> = subject.versions.iter().map(|v| &v.schema).collect();
            refusals(subject.compatibility, &schema, &earlier)
        });
        Ok(Judged {
            schema,
            validator,
            reasons,
        })
    });
    judging.await.expect("the schema check panicked")
}

/// The registry: every subject, stored and in memory.
#[derive(Debug)]
pub struct SchemaRegistry {
    state: Arc<dyn StateStore>,
    limits: SchemaLimits,
    subjects: RwLock<HashMap<SubjectName, Subject>>,
    /// Held by every change from its read to its write, so two
    /// registrations cannot both take one version number.
    changing: tokio::sync::Mutex<()>,
}

impl SchemaRegistry {
    /// Loads the stored subjects; one that cannot be read is logged and
    /// skipped.
    pub async fn load(
        state: Arc<dyn StateStore>,
        limits: SchemaLimits,
    ) -> Result<Self, StateError> {
        let mut subjects = HashMap::new();
        for row in state.list(KeyKind::SchemaSubject).await? {
            let loaded = serde_json::from_value::<StoredSubject>(row)
                .map_err(|error| error.to_string())
                .and_then(|stored| {
                    let name =
                        SubjectName::parse(&stored.namespace, &stored.tenant, &stored.subject)
                            .map_err(|error| error.to_string())?;
                    let subject = Subject::compiled(stored).map_err(|error| error.to_string())?;
                    Ok((name, subject))
                });
            match loaded {
                Ok((name, subject)) => {
                    subjects.insert(name, subject);
                }
                Err(error) => {
                    tracing::error!(%error, "a stored schema subject could not be loaded")
                }
            }
        }
        Ok(Self {
            state,
            limits,
            subjects: RwLock::new(subjects),
            changing: tokio::sync::Mutex::default(),
        })
    }

    /// Registers `schema` under `name`: the existing version if one is
    /// identical (`false`), else a new one (`true`) if the subject's mode
    /// allows it.
    pub async fn register(
        &self,
        name: &SubjectName,
        schema: Value,
    ) -> Result<(SchemaVersion, bool), SchemaError> {
        let _changing = self.changing.lock().await;
        let mut stored = self.stored_or_new(name);
        if let Some(existing) = stored.versions.iter().find(|v| v.schema == schema) {
            return Ok((existing.clone(), false));
        }
        if stored.versions.len() >= MAX_VERSIONS {
            return Err(SchemaError::TooManyVersions {
                subject: name.subject.to_string(),
            });
        }
        self.check_room(name, size_of(&schema))?;
        let Judged {
            schema,
            validator,
            reasons,
        } = judge(schema, Some(stored.clone())).await?;
        if !reasons.is_empty() {
            return Err(SchemaError::Incompatible {
                subject: name.subject.to_string(),
                mode: stored.compatibility,
                reasons,
            });
        }
        let version = SchemaVersion {
            subject: name.subject.to_string(),
            version: stored.next_version,
            schema,
            registered_at: Utc::now(),
        };
        stored.next_version += 1;
        stored.versions.push(version.clone());
        self.save(name, stored, Some((version.version, validator)))
            .await?;
        Ok((version, true))
    }

    /// Whether `schema` could be registered under `name` now, and why not.
    pub async fn check(
        &self,
        name: &SubjectName,
        schema: Value,
    ) -> Result<Vec<String>, SchemaError> {
        Ok(judge(schema, self.stored(name)).await?.reasons)
    }

    /// The subjects of a namespace and tenant, by name.
    pub fn subjects(&self, namespace: &str, tenant: &str) -> Vec<String> {
        let subjects = self.subjects.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = subjects
            .keys()
            .filter(|name| name.namespace.as_str() == namespace && name.tenant.as_str() == tenant)
            .map(|name| name.subject.to_string())
            .collect();
        names.sort();
        names
    }

    /// The version numbers a subject keeps, oldest first.
    pub fn versions(&self, name: &SubjectName) -> Result<Vec<u32>, SchemaError> {
        let stored = self.existing(name)?;
        Ok(stored.versions.iter().map(|v| v.version).collect())
    }

    pub fn version(
        &self,
        name: &SubjectName,
        version: SchemaVersionRef,
    ) -> Result<SchemaVersion, SchemaError> {
        let stored = self.existing(name)?;
        let found = match version {
            SchemaVersionRef::Latest => stored.versions.last(),
            SchemaVersionRef::Number(n) => stored.versions.iter().find(|v| v.version == n),
        };
        found.cloned().ok_or_else(|| not_found(name, version))
    }

    /// The validator of a version, for a publish path.
    pub fn bound(
        &self,
        name: &SubjectName,
        version: SchemaVersionRef,
    ) -> Result<Bound, SchemaError> {
        let subjects = self.subjects.read().unwrap_or_else(PoisonError::into_inner);
        let subject = subjects
            .get(name)
            .ok_or_else(|| SchemaError::SubjectNotFound {
                subject: name.subject.to_string(),
            })?;
        let found = match version {
            SchemaVersionRef::Latest => subject.validators.last_key_value(),
            SchemaVersionRef::Number(n) => subject.validators.get_key_value(&n),
        };
        let (number, validator) = found.ok_or_else(|| not_found(name, version))?;
        Ok(Bound {
            subject: name.subject.to_string(),
            version: *number,
            validator: Arc::clone(validator),
        })
    }

    pub fn compatibility(&self, name: &SubjectName) -> Result<Compatibility, SchemaError> {
        Ok(self.existing(name)?.compatibility)
    }

    /// Sets a subject's mode; a subject without versions yet is made, so
    /// the mode can be chosen before the first registration.
    pub async fn set_compatibility(
        &self,
        name: &SubjectName,
        mode: Compatibility,
    ) -> Result<(), SchemaError> {
        let _changing = self.changing.lock().await;
        self.check_room(name, 0)?;
        let mut stored = self.stored_or_new(name);
        stored.compatibility = mode;
        self.save(name, stored, None).await
    }

    /// Deletes a version; its number is never given again. `in_use`
    /// says whether a topic is bound to the version, by its number or (if
    /// it is the latest, the `bool`) as `latest`; that refuses the delete.
    pub async fn delete_version(
        &self,
        name: &SubjectName,
        version: u32,
        in_use: impl FnOnce(&SubjectName, u32, bool) -> bool,
    ) -> Result<(), SchemaError> {
        let _changing = self.changing.lock().await;
        let mut stored = self.existing(name)?;
        let Some(index) = stored.versions.iter().position(|v| v.version == version) else {
            return Err(not_found(name, SchemaVersionRef::Number(version)));
        };
        if in_use(name, version, index + 1 == stored.versions.len()) {
            return Err(SchemaError::InUse {
                subject: name.subject.to_string(),
                version,
            });
        }
        stored.versions.remove(index);
        self.save(name, stored, None).await
    }

    /// Refuses a new version of `size` bytes under `name` that would take
    /// its tenant over a limit.
    fn check_room(&self, name: &SubjectName, size: usize) -> Result<(), SchemaError> {
        let subjects = self.subjects.read().unwrap_or_else(PoisonError::into_inner);
        let tenant: Vec<&Subject> = subjects
            .iter()
            .filter(|(other, _)| other.namespace == name.namespace && other.tenant == name.tenant)
            .map(|(_, subject)| subject)
            .collect();
        let limits = self.limits;
        if !subjects.contains_key(name) && tenant.len() >= limits.max_subjects_per_tenant {
            return Err(SchemaError::LimitReached(format!(
                "tenant {} has {} schema subjects, the most max_schema_subjects_per_tenant allows",
                name.tenant,
                tenant.len()
            )));
        }
        let held: usize = tenant.iter().map(|subject| subject.bytes).sum();
        if held + size > limits.max_bytes_per_tenant {
            return Err(SchemaError::LimitReached(format!(
                "tenant {} keeps {held} bytes of schemas; {size} more would pass \
                 max_schema_bytes_per_tenant ({}): delete versions first",
                name.tenant, limits.max_bytes_per_tenant
            )));
        }
        Ok(())
    }

    /// Holds off every change to the registry until the guard is dropped:
    /// a topic is bound under it, so a version cannot be deleted between
    /// the check that it exists and the binding's write.
    pub async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    /// Ok if `version` of `name` exists now.
    pub fn require(
        &self,
        name: &SubjectName,
        version: SchemaVersionRef,
    ) -> Result<(), SchemaError> {
        self.bound(name, version).map(drop)
    }

    fn stored(&self, name: &SubjectName) -> Option<StoredSubject> {
        let subjects = self.subjects.read().unwrap_or_else(PoisonError::into_inner);
        subjects.get(name).map(|subject| subject.stored.clone())
    }

    /// The subject, or a new one without versions in the default mode.
    fn stored_or_new(&self, name: &SubjectName) -> StoredSubject {
        self.stored(name).unwrap_or_else(|| StoredSubject {
            namespace: name.namespace.to_string(),
            tenant: name.tenant.to_string(),
            subject: name.subject.to_string(),
            compatibility: Compatibility::default(),
            next_version: 1,
            versions: Vec::new(),
        })
    }

    fn existing(&self, name: &SubjectName) -> Result<StoredSubject, SchemaError> {
        self.stored(name)
            .ok_or_else(|| SchemaError::SubjectNotFound {
                subject: name.subject.to_string(),
            })
    }

    /// Stores `stored`, then mirrors it with `added`'s validator and
    /// without those of deleted versions.
    async fn save(
        &self,
        name: &SubjectName,
        stored: StoredSubject,
        added: Option<(u32, Arc<jsonschema::Validator>)>,
    ) -> Result<(), SchemaError> {
        let document = serde_json::to_value(&stored).expect("subjects serialise");
        self.state
            .put(KeyKind::SchemaSubject, &name.key(), &document)
            .await?;
        let mut subjects = self
            .subjects
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let subject = subjects.entry(name.clone()).or_insert_with(|| Subject {
            stored: stored.clone(),
            validators: BTreeMap::new(),
            bytes: 0,
        });
        if let Some((version, validator)) = added {
            subject.validators.insert(version, validator);
        }
        subject
            .validators
            .retain(|version, _| stored.versions.iter().any(|v| v.version == *version));
        subject.bytes = stored_bytes(&stored);
        subject.stored = stored;
        Ok(())
    }
}

impl Subject {
    fn compiled(stored: StoredSubject) -> Result<Self, SchemaError> {
        let validators = stored
            .versions
            .iter()
            .map(|v| Ok((v.version, Arc::new(compile(&v.schema)?))))
            .collect::<Result<_, SchemaError>>()?;
        Ok(Self {
            bytes: stored_bytes(&stored),
            stored,
            validators,
        })
    }
}

fn stored_bytes(stored: &StoredSubject) -> usize {
    stored.versions.iter().map(|v| size_of(&v.schema)).sum()
}

fn not_found(name: &SubjectName, version: SchemaVersionRef) -> SchemaError {
    SchemaError::VersionNotFound {
        subject: name.subject.to_string(),
        version: version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::state::MemoryStore;

    const LIMITS: SchemaLimits = SchemaLimits {
        max_subjects_per_tenant: 10,
        max_bytes_per_tenant: 1024 * 1024,
    };

    fn name(subject: &str) -> SubjectName {
        SubjectName::parse("ns", "t1", subject).unwrap()
    }

    fn person(required: &[&str]) -> Value {
        json!({
            "type": "object",
            "properties": { "name": { "type": "string" }, "age": { "type": "integer" } },
            "required": required,
        })
    }

    #[tokio::test]
    async fn versions_grow_identical_schemas_reuse_theirs_and_survive_a_restart() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let registry = SchemaRegistry::load(Arc::clone(&state), LIMITS)
            .await
            .unwrap();
        let people = name("people");
        let (first, created) = registry.register(&people, person(&["name"])).await.unwrap();
        assert_eq!((first.version, created), (1, true));
        let (again, created) = registry.register(&people, person(&["name"])).await.unwrap();
        assert_eq!((again.version, created), (1, false));
        let (second, _) = registry.register(&people, person(&[])).await.unwrap();
        assert_eq!(second.version, 2);
        // A new required property breaks backward compatibility.
        let refused = registry.register(&people, person(&["name", "age"])).await;
        assert!(
            matches!(refused, Err(SchemaError::Incompatible { .. })),
            "{refused:?}"
        );

        registry
            .delete_version(&people, 2, |_, _, _| false)
            .await
            .unwrap();
        let (third, _) = registry.register(&people, person(&[])).await.unwrap();
        assert_eq!(third.version, 3, "a deleted number is not given again");
        let in_use = registry
            .delete_version(&people, 3, |_, _, latest| latest)
            .await;
        assert!(
            matches!(in_use, Err(SchemaError::InUse { .. })),
            "{in_use:?}"
        );

        let reloaded = SchemaRegistry::load(state, LIMITS).await.unwrap();
        assert_eq!(reloaded.versions(&people).unwrap(), [1, 3]);
        let bound = reloaded.bound(&people, SchemaVersionRef::Latest).unwrap();
        assert_eq!(bound.version, 3);
        assert!(bound.validator.is_valid(&json!({ "age": 4 })));
        assert!(!bound.validator.is_valid(&json!({ "age": "four" })));
    }

    #[tokio::test]
    async fn each_mode_compares_with_the_versions_it_names() {
        let registry = SchemaRegistry::load(Arc::new(MemoryStore::default()), LIMITS)
            .await
            .unwrap();
        let subject = name("modes");
        let narrow = json!({ "type": "integer", "maximum": 5 });
        let wide = json!({ "type": "integer", "maximum": 10 });
        let wider = json!({ "type": "integer", "maximum": 20 });
        registry.register(&subject, narrow.clone()).await.unwrap();
        registry
            .set_compatibility(&subject, Compatibility::Forward)
            .await
            .unwrap();
        assert!(
            !registry
                .check(&subject, wide.clone())
                .await
                .unwrap()
                .is_empty()
        );
        registry
            .set_compatibility(&subject, Compatibility::Backward)
            .await
            .unwrap();
        registry.register(&subject, wide.clone()).await.unwrap();
        registry
            .set_compatibility(&subject, Compatibility::ForwardTransitive)
            .await
            .unwrap();
        let back_to_narrow = json!({ "type": "integer", "maximum": 5, "minimum": 0 });
        assert!(
            registry
                .check(&subject, back_to_narrow)
                .await
                .unwrap()
                .is_empty()
        );
        registry
            .set_compatibility(&subject, Compatibility::Full)
            .await
            .unwrap();
        assert!(!registry.check(&subject, wider).await.unwrap().is_empty());
        registry
            .set_compatibility(&subject, Compatibility::None)
            .await
            .unwrap();
        assert!(
            registry
                .check(&subject, json!({ "type": "string" }))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_tenant_keeps_its_subjects_and_bytes_within_its_limits() {
        let limits = SchemaLimits {
            max_subjects_per_tenant: 2,
            max_bytes_per_tenant: 100,
        };
        let registry = SchemaRegistry::load(Arc::new(MemoryStore::default()), limits)
            .await
            .unwrap();
        let small = |n: u64| json!({ "maximum": n });
        registry.register(&name("a"), small(1)).await.unwrap();
        registry.register(&name("b"), small(1)).await.unwrap();
        let third = registry.register(&name("c"), small(1)).await;
        assert!(
            matches!(third, Err(SchemaError::LimitReached(_))),
            "{third:?}"
        );
        let other = SubjectName::parse("ns", "t2", "c").unwrap();
        registry.register(&other, small(1)).await.unwrap();

        let big = json!({ "description": "x".repeat(69) });
        let over = registry.register(&name("a"), big.clone()).await;
        assert!(
            matches!(over, Err(SchemaError::LimitReached(_))),
            "{over:?}"
        );
        registry
            .set_compatibility(&name("a"), Compatibility::None)
            .await
            .unwrap();
        registry
            .delete_version(&name("b"), 1, |_, _, _| false)
            .await
            .unwrap();
        registry.register(&name("a"), big).await.unwrap();
    }

    #[test]
    fn issues_are_at_most_ten_and_short() {
        let schema = json!({ "type": "array", "items": { "const": "y".repeat(1000) } });
        let bound = Bound {
            subject: "s".to_owned(),
            version: 1,
            validator: Arc::new(compile(&schema).unwrap()),
        };
        let violation = bound.check(&json!(vec!["x".repeat(1000); 30])).unwrap_err();
        assert_eq!(violation.issues.len(), MAX_ISSUES);
        for issue in &violation.issues {
            assert!(
                issue.message.len() <= MAX_ISSUE_BYTES + '…'.len_utf8(),
                "{issue:?}"
            );
        }
        assert!(bound.check(&json!(["y".repeat(1000)])).is_ok());
    }

    #[test]
    fn only_valid_2020_12_schemas_compile() {
        assert!(compile(&json!({ "type": "object" })).is_ok());
        assert!(compile(&json!(true)).is_ok());
        assert!(compile(&json!({ "properties": { "$schema": { "type": "string" } } })).is_ok());
        assert!(compile(&json!({ "const": { "$schema": "anything" } })).is_ok());
        for bad in [
            json!({ "properties": { "p": {
                "$id": "urn:p",
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "string",
            } } }),
            json!({ "items": { "$schema": "https://json-schema.org/draft/2020-12/schema" } }),
            json!({ "type": "no-such-type" }),
            json!({ "minLength": -1 }),
            json!(3),
            json!({ "$schema": "http://json-schema.org/draft-07/schema#" }),
        ] {
            assert!(
                matches!(compile(&bad), Err(SchemaError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
