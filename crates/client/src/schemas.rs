//! The schema registry: subjects of JSON Schemas per tenant, their
//! versions and compatibility modes, and the binding of topics to them.

use acteon_core::{
    Compatibility, SchemaBinding, SchemaVersion, SchemaVersionRef, TopicName, TopicRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::Client;
use crate::error::Error;

/// Which subject: namespace, tenant, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectRef {
    pub namespace: String,
    pub tenant: String,
    pub subject: String,
}

impl SubjectRef {
    pub fn new(
        namespace: impl Into<String>,
        tenant: impl Into<String>,
        subject: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            tenant: tenant.into(),
            subject: subject.into(),
        }
    }

    fn segments<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut segments = vec![
            "v1",
            "schemas",
            self.namespace.as_str(),
            self.tenant.as_str(),
            self.subject.as_str(),
        ];
        segments.extend(rest);
        segments
    }
}

/// A registration's answer: the version, and whether it is new (201) or an
/// identical schema's existing one (200).
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub version: SchemaVersion,
    pub created: bool,
}

/// Whether a schema could be registered, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CompatibilityCheck {
    pub compatible: bool,
    pub messages: Vec<String>,
}

#[derive(Serialize)]
struct SchemaBody<'a> {
    schema: &'a Value,
}

#[derive(Serialize, Deserialize)]
struct ConfigBody {
    compatibility: Compatibility,
}

impl Client {
    /// `POST /v1/schemas/{namespace}/{tenant}/{subject}/versions`.
    pub async fn register_schema(
        &self,
        subject: &SubjectRef,
        schema: &Value,
    ) -> Result<Registered, Error> {
        let request = self.request(reqwest::Method::POST, &subject.segments(&["versions"]));
        let response = self.call(request.json(&SchemaBody { schema })).await?;
        let created = response.status() == reqwest::StatusCode::CREATED;
        let bytes = response.bytes().await?;
        let version =
            serde_json::from_slice(&bytes).map_err(|error| Error::Decode(error.to_string()))?;
        Ok(Registered { version, created })
    }

    /// `GET /v1/schemas/{namespace}/{tenant}`: the subjects, by name.
    pub async fn list_schema_subjects(
        &self,
        namespace: &str,
        tenant: &str,
    ) -> Result<Vec<String>, Error> {
        let request = self.request(reqwest::Method::GET, &["v1", "schemas", namespace, tenant]);
        self.call_json(request).await
    }

    /// `GET …/{subject}/versions`: the version numbers, oldest first.
    pub async fn list_schema_versions(&self, subject: &SubjectRef) -> Result<Vec<u32>, Error> {
        let request = self.request(reqwest::Method::GET, &subject.segments(&["versions"]));
        self.call_json(request).await
    }

    /// `GET …/{subject}/versions/{n|latest}`.
    pub async fn get_schema_version(
        &self,
        subject: &SubjectRef,
        version: SchemaVersionRef,
    ) -> Result<SchemaVersion, Error> {
        let version = version.to_string();
        let segments = subject.segments(&["versions", version.as_str()]);
        self.call_json(self.request(reqwest::Method::GET, &segments))
            .await
    }

    /// `DELETE …/{subject}/versions/{n}`: refused (409) while a topic is
    /// bound to it.
    pub async fn delete_schema_version(
        &self,
        subject: &SubjectRef,
        version: u32,
    ) -> Result<(), Error> {
        let version = version.to_string();
        let segments = subject.segments(&["versions", version.as_str()]);
        self.call(self.request(reqwest::Method::DELETE, &segments))
            .await
            .map(drop)
    }

    /// `GET …/{subject}/config`.
    pub async fn schema_compatibility(&self, subject: &SubjectRef) -> Result<Compatibility, Error> {
        let request = self.request(reqwest::Method::GET, &subject.segments(&["config"]));
        let config: ConfigBody = self.call_json(request).await?;
        Ok(config.compatibility)
    }

    /// `PUT …/{subject}/config`.
    pub async fn set_schema_compatibility(
        &self,
        subject: &SubjectRef,
        compatibility: Compatibility,
    ) -> Result<(), Error> {
        let request = self.request(reqwest::Method::PUT, &subject.segments(&["config"]));
        self.call(request.json(&ConfigBody { compatibility }))
            .await
            .map(drop)
    }

    /// `POST …/{subject}/compatibility`: checks without registering.
    pub async fn check_schema(
        &self,
        subject: &SubjectRef,
        schema: &Value,
    ) -> Result<CompatibilityCheck, Error> {
        let request = self.request(reqwest::Method::POST, &subject.segments(&["compatibility"]));
        self.call_json(request.json(&SchemaBody { schema })).await
    }

    /// `PUT /v1/bus/topics/{kafka_name}/schema`: binds the topic to a
    /// subject of its own tenant.
    pub async fn bind_topic_schema(
        &self,
        topic: &TopicName,
        binding: &SchemaBinding,
    ) -> Result<TopicRecord, Error> {
        let request = self.topic_schema(reqwest::Method::PUT, topic);
        self.call_json(request.json(binding)).await
    }

    /// `DELETE /v1/bus/topics/{kafka_name}/schema`.
    pub async fn unbind_topic_schema(&self, topic: &TopicName) -> Result<TopicRecord, Error> {
        self.call_json(self.topic_schema(reqwest::Method::DELETE, topic))
            .await
    }

    fn topic_schema(&self, method: reqwest::Method, topic: &TopicName) -> reqwest::RequestBuilder {
        let kafka_name = topic.to_string();
        self.request(
            method,
            &["v1", "bus", "topics", kafka_name.as_str(), "schema"],
        )
    }
}
