//! `/v1/schemas/{namespace}/{tenant}/...`: the schema registry.

use acteon_core::{
    Compatibility, Fragment, SchemaVersion, SchemaVersionRef, SchemaVersionRefError,
};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::durable::tenant_scope;
use super::extract::{Json, Path};
use crate::app::AppState;
use crate::auth::{Caller, Op};
use crate::error::ApiError;
use crate::schemas::registry::{SchemaError, SubjectName};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(subjects))
        .routes(routes!(versions, register))
        .routes(routes!(version, delete_version))
        .routes(routes!(config, set_config))
        .routes(routes!(check))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct TenantPath {
    #[param(value_type = Fragment)]
    namespace: String,
    #[param(value_type = Fragment)]
    tenant: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct SubjectPath {
    #[param(value_type = Fragment)]
    namespace: String,
    #[param(value_type = Fragment)]
    tenant: String,
    /// The subject's name, unique in its tenant.
    #[param(value_type = Fragment)]
    subject: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct VersionPath {
    #[param(value_type = Fragment)]
    namespace: String,
    #[param(value_type = Fragment)]
    tenant: String,
    #[param(value_type = Fragment)]
    subject: String,
    /// A version number, or `latest`.
    #[param(value_type = SchemaVersionRef)]
    version: String,
}

impl TenantPath {
    /// Ok once the caller may use this tenant's registry.
    fn require(&self, caller: &Caller) -> Result<(), ApiError> {
        caller.require(Op::Schema, &tenant_scope(&self.namespace, &self.tenant)?)?;
        Ok(())
    }
}

/// The subject a path names, once the caller may use the registry of its
/// tenant: another tenant's subject and a missing one answer alike.
fn subject_for(
    caller: &Caller,
    namespace: &str,
    tenant: &str,
    subject: &str,
) -> Result<SubjectName, ApiError> {
    caller.require(Op::Schema, &tenant_scope(namespace, tenant)?)?;
    Ok(SubjectName::parse(namespace, tenant, subject).map_err(SchemaError::from)?)
}

impl SubjectPath {
    fn subject(&self, caller: &Caller) -> Result<SubjectName, ApiError> {
        subject_for(caller, &self.namespace, &self.tenant, &self.subject)
    }
}

impl VersionPath {
    /// The subject, and the version of it the path names.
    fn version(&self, caller: &Caller) -> Result<(SubjectName, SchemaVersionRef), ApiError> {
        let name = subject_for(caller, &self.namespace, &self.tenant, &self.subject)?;
        let version = self
            .version
            .parse()
            .map_err(|error: SchemaVersionRefError| ApiError::bad_request(error.to_string()))?;
        Ok((name, version))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SchemaRequest {
    /// A JSON Schema, draft 2020-12: an object or a boolean.
    schema: serde_json::Value,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CompatibilityConfig {
    compatibility: Compatibility,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CompatibilityAnswer {
    compatible: bool,
    /// Why not, one reason per place in the schema.
    messages: Vec<String>,
}

/// The subjects of a tenant.
#[utoipa::path(
    get,
    path = "/v1/schemas/{namespace}/{tenant}",
    tag = "schemas",
    params(TenantPath),
    responses((status = 200, body = Vec<String>), Refusals),
)]
async fn subjects(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<TenantPath>,
) -> Result<axum::Json<Vec<String>>, ApiError> {
    path.require(&caller)?;
    Ok(axum::Json(
        app.schemas.subjects(&path.namespace, &path.tenant),
    ))
}

/// Registers a schema: 201 with a new version, or 200 with the version
/// an identical schema already has.
#[utoipa::path(
    post,
    path = "/v1/schemas/{namespace}/{tenant}/{subject}/versions",
    tag = "schemas",
    params(SubjectPath),
    request_body = SchemaRequest,
    responses(
        (status = 201, description = "A new version", body = SchemaVersion),
        (status = 200, description = "The version of an identical schema", body = SchemaVersion),
        Refusals,
    ),
)]
async fn register(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<SubjectPath>,
    Json(request): Json<SchemaRequest>,
) -> Result<(StatusCode, axum::Json<SchemaVersion>), ApiError> {
    let name = path.subject(&caller)?;
    let (version, created) = app.schemas.register(&name, request.schema).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(version)))
}

/// The version numbers a subject keeps, oldest first.
#[utoipa::path(
    get,
    path = "/v1/schemas/{namespace}/{tenant}/{subject}/versions",
    tag = "schemas",
    params(SubjectPath),
    responses((status = 200, body = Vec<u32>), Refusals),
)]
async fn versions(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<SubjectPath>,
) -> Result<axum::Json<Vec<u32>>, ApiError> {
    let name = path.subject(&caller)?;
    Ok(axum::Json(app.schemas.versions(&name)?))
}

/// One version, by number or `latest`.
#[utoipa::path(
    get,
    path = "/v1/schemas/{namespace}/{tenant}/{subject}/versions/{version}",
    tag = "schemas",
    params(VersionPath),
    responses((status = 200, body = SchemaVersion), Refusals),
)]
async fn version(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<VersionPath>,
) -> Result<axum::Json<SchemaVersion>, ApiError> {
    let (name, version) = path.version(&caller)?;
    Ok(axum::Json(app.schemas.version(&name, version)?))
}

/// Deletes a version; 409 while a topic is bound to it. Its number is
/// never given again.
#[utoipa::path(
    delete,
    path = "/v1/schemas/{namespace}/{tenant}/{subject}/versions/{version}",
    tag = "schemas",
    params(VersionPath),
    responses((status = 204, description = "Deleted"), Refusals),
)]
async fn delete_version(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<VersionPath>,
) -> Result<StatusCode, ApiError> {
    let (name, SchemaVersionRef::Number(version)) = path.version(&caller)? else {
        return Err(ApiError::bad_request("delete a version by its number"));
    };
    app.schemas
        .delete_version(&name, version, |subject, version, latest| {
            app.topics.binds(subject, version, latest)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A subject's compatibility mode.
#[utoipa::path(
    get,
    path = "/v1/schemas/{namespace}/{tenant}/{subject}/config",
    tag = "schemas",
    params(SubjectPath),
    responses((status = 200, body = CompatibilityConfig), Refusals),
)]
async fn config(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<SubjectPath>,
) -> Result<axum::Json<CompatibilityConfig>, ApiError> {
    let name = path.subject(&caller)?;
    let compatibility = app.schemas.compatibility(&name)?;
    Ok(axum::Json(CompatibilityConfig { compatibility }))
}

/// Sets a subject's compatibility mode, also before its first version;
/// later registrations follow it.
#[utoipa::path(
    put,
    path = "/v1/schemas/{namespace}/{tenant}/{subject}/config",
    tag = "schemas",
    params(SubjectPath),
    request_body = CompatibilityConfig,
    responses((status = 200, body = CompatibilityConfig), Refusals),
)]
async fn set_config(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<SubjectPath>,
    Json(request): Json<CompatibilityConfig>,
) -> Result<axum::Json<CompatibilityConfig>, ApiError> {
    let name = path.subject(&caller)?;
    app.schemas
        .set_compatibility(&name, request.compatibility)
        .await?;
    Ok(axum::Json(request))
}

/// Whether a schema could be registered now, without registering it.
#[utoipa::path(
    post,
    path = "/v1/schemas/{namespace}/{tenant}/{subject}/compatibility",
    tag = "schemas",
    params(SubjectPath),
    request_body = SchemaRequest,
    responses((status = 200, body = CompatibilityAnswer), Refusals),
)]
async fn check(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<SubjectPath>,
    Json(request): Json<SchemaRequest>,
) -> Result<axum::Json<CompatibilityAnswer>, ApiError> {
    let name = path.subject(&caller)?;
    let messages = app.schemas.check(&name, request.schema).await?;
    Ok(axum::Json(CompatibilityAnswer {
        compatible: messages.is_empty(),
        messages,
    }))
}
