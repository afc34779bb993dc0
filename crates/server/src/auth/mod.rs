//! API keys with per-tenant grants.
//!
//! A caller sends `Authorization: Bearer <secret>`. Keys are configured by
//! the SHA-256 of their secret, so no secret sits in the configuration; a
//! presented secret is hashed and compared with every key's hash in
//! constant time. A grant names a namespace and a tenant (`"*"` matches
//! any) and the operations it allows; `admin` allows every operation.
//! Subscribe endpoints also take a subscribe token as `?token=` (see
//! [`tokens`]).

mod tokens;

use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use acteon_core::{FragmentKind, Pattern, Scope};

pub use self::tokens::{Claims, TokenError, TokenKey, TokenSigner, TokenStream};
use crate::app::AppState;
use crate::error::{ApiError, ServiceError};

/// An operation a grant can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `POST /v1/bus/publish`.
    Publish,
    /// `GET /v1/bus/subscribe/...`.
    Subscribe,
    /// Topic create and delete.
    Manage,
    /// `GET /v1/audit`.
    Audit,
    /// `GET /metrics`.
    Metrics,
    /// The schema registry: register, read, check, configure, delete.
    Schema,
    /// Rules, silences, and every other operation.
    Admin,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Manage => "manage",
            Self::Audit => "audit",
            Self::Metrics => "metrics",
            Self::Schema => "schema",
            Self::Admin => "admin",
        })
    }
}

/// What a key may do, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub namespace: String,
    pub tenant: String,
    pub ops: Vec<Op>,
}

impl Op {
    /// Whether a grant of `self` allows `op`.
    fn allows(self, op: Op) -> bool {
        self == op || self == Op::Admin
    }
}

/// The scheme of the Authorization header, and the space after it.
const BEARER: &[u8] = b"Bearer ";

/// A grant, checked: its namespace and tenant as a [`Scope`].
#[derive(Debug)]
pub struct GrantScope {
    scope: Scope,
    ops: Vec<Op>,
}

impl GrantScope {
    fn allows(&self, op: Op, asked: &Scope) -> bool {
        self.ops.iter().any(|granted| granted.allows(op)) && self.scope.contains(asked)
    }
}

/// An `[[auth.keys]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs and audit records; never the secret.
    pub id: String,
    /// Hex SHA-256 of the secret, as `acteon keys new` prints it.
    pub key_sha256: String,
    pub grants: Vec<Grant>,
}

/// The `[auth]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub enabled: bool,
    /// Without auth the server only listens on loopback addresses, unless
    /// this is set.
    pub allow_unauthenticated: bool,
    /// A TOML file of further `[[keys]]`, so secrets' hashes need not sit
    /// in `acteon.toml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<std::path::PathBuf>,
    pub keys: Vec<ApiKeyConfig>,
    /// Hex of 32 bytes that sign subscribe tokens, shared by servers behind
    /// one address; without it each process signs with a random key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse_token_key: Option<TokenKey>,
}

/// A key configuration that cannot be used.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("auth key {id:?}: key_sha256 must be 64 hex digits")]
    BadHash { id: String },
    #[error("auth key id {0:?} is used twice")]
    DuplicateId(String),
    #[error("auth key {id:?}: a grant's namespace and tenant must be \"*\" or a name")]
    BadGrant { id: String },
    #[error("auth keys {0:?} and {1:?} have the same key_sha256")]
    DuplicateHash(String, String),
    #[error("[auth] sse_token_key must be 64 hex digits")]
    BadTokenKey,
    #[error("no randomness for the subscribe token key: {0}")]
    NoRandomness(getrandom::Error),
}

#[derive(Debug)]
struct Key {
    id: Arc<str>,
    hash: [u8; 32],
    grants: Arc<[GrantScope]>,
}

impl Key {
    /// Eight bytes of the hash: enough to tell two secrets apart, too few
    /// to say anything about either.
    fn fingerprint(&self) -> String {
        hex::encode(&self.hash[..8])
    }
}

/// The configured keys, and the signer of subscribe tokens.
#[derive(Debug)]
pub struct KeyStore {
    enabled: bool,
    keys: Vec<Key>,
    tokens: TokenSigner,
}

impl KeyStore {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let mut keys: Vec<Key> = Vec::with_capacity(config.keys.len());
        for key in &config.keys {
            if keys.iter().any(|k| *k.id == *key.id) {
                return Err(AuthError::DuplicateId(key.id.clone()));
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(key.key_sha256.trim(), &mut hash)
                .map_err(|_| AuthError::BadHash { id: key.id.clone() })?;
            // Two keys with one secret: whichever matched, the other's
            // grants would be silently unreachable.
            if let Some(twin) = keys.iter().find(|k| k.hash == hash) {
                return Err(AuthError::DuplicateHash(
                    twin.id.to_string(),
                    key.id.clone(),
                ));
            }
            let grants = key
                .grants
                .iter()
                .map(|grant| {
                    let scope = Scope {
                        namespace: Pattern::parse_wildcard(
                            FragmentKind::Namespace,
                            &grant.namespace,
                        )?,
                        tenant: Pattern::parse_wildcard(FragmentKind::Tenant, &grant.tenant)?,
                        name: Pattern::Any,
                    };
                    Ok(GrantScope {
                        scope,
                        ops: grant.ops.clone(),
                    })
                })
                .collect::<Result<Arc<[_]>, acteon_core::NameError>>()
                .map_err(|_| AuthError::BadGrant { id: key.id.clone() })?;
            keys.push(Key {
                id: key.id.as_str().into(),
                hash,
                grants,
            });
        }
        let tokens = match &config.sse_token_key {
            Some(key) => {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(key.0.trim(), &mut bytes)
                    .map_err(|_| AuthError::BadTokenKey)?;
                TokenSigner::new(bytes)
            }
            None => TokenSigner::random().map_err(AuthError::NoRandomness)?,
        };
        Ok(Self {
            enabled: config.enabled,
            keys,
            tokens,
        })
    }

    /// A token that opens `stream` for `caller` until `expires` (Unix
    /// seconds).
    pub fn issue_token(&self, caller: &Caller, stream: TokenStream, expires: i64) -> String {
        let key = caller
            .principal()
            .and_then(|id| self.keys.iter().find(|key| *key.id == *id));
        self.tokens.issue(&Claims {
            key: key.map(|key| key.id.to_string()),
            fingerprint: key.map(Key::fingerprint).unwrap_or_default(),
            stream,
            expires,
        })
    }

    /// Who presents a subscribe token: the key it was issued to must still
    /// be configured, and its grants are checked again on every use.
    fn identify_token(&self, token: &str) -> Result<Caller, ServiceError> {
        if !self.enabled {
            return Ok(Caller::Unrestricted);
        }
        let claims = self
            .tokens
            .verify(token, Utc::now())
            .map_err(ServiceError::BadToken)?;
        let key = claims
            .key
            .and_then(|id| self.keys.iter().find(|key| *key.id == *id))
            .filter(|key| key.fingerprint() == claims.fingerprint)
            .ok_or(ServiceError::BadToken(TokenError::Invalid))?;
        let expires = chrono::DateTime::from_timestamp(claims.expires, 0)
            .ok_or(ServiceError::BadToken(TokenError::Invalid))?;
        Ok(Caller::Token {
            key: Arc::clone(&key.id),
            grants: Arc::clone(&key.grants),
            stream: claims.stream,
            expires,
        })
    }

    /// Who presents `authorization` (the header's value, if any).
    fn identify(&self, authorization: Option<&[u8]>) -> Result<Caller, ServiceError> {
        if !self.enabled {
            return Ok(Caller::Unrestricted);
        }
        let secret = authorization
            .ok_or(ServiceError::Unauthorized(
                "an API key is required (Authorization: Bearer <key>)",
            ))?
            .split_at_checked(BEARER.len())
            // The scheme is case-insensitive (RFC 7235).
            .filter(|(scheme, secret)| scheme.eq_ignore_ascii_case(BEARER) && !secret.is_empty())
            .map(|(_, secret)| secret)
            .ok_or(ServiceError::Unauthorized(
                "the Authorization header must be \"Bearer <key>\"",
            ))?;
        let presented: [u8; 32] = Sha256::digest(secret).into();
        // Compare with every key, so timing does not tell which was close.
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        let key = found.ok_or(ServiceError::Unauthorized("unknown API key"))?;
        Ok(Caller::Key {
            id: Arc::clone(&key.id),
            grants: Arc::clone(&key.grants),
        })
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is disabled: every operation is allowed.
    Unrestricted,
    Key {
        id: Arc<str>,
        grants: Arc<[GrantScope]>,
    },
    /// A subscribe token: one stream, nothing else, while its key's grants
    /// allow it and until it expires.
    Token {
        key: Arc<str>,
        grants: Arc<[GrantScope]>,
        stream: TokenStream,
        expires: chrono::DateTime<Utc>,
    },
}

impl Caller {
    /// The key id, for audit records and per-key limits.
    pub fn principal(&self) -> Option<&str> {
        match self {
            Self::Unrestricted => None,
            Self::Key { id, .. } => Some(id),
            Self::Token { key, .. } => Some(key),
        }
    }

    /// Whether the caller may do `op` on every topic in `scope`.
    pub fn may(&self, op: Op, scope: &Scope) -> bool {
        match self {
            Self::Unrestricted => true,
            Self::Key { grants, .. } => grants.iter().any(|g| g.allows(op, scope)),
            Self::Token { .. } => false,
        }
    }

    /// Whether the caller may read `stream`, whose topics are `scope`: with
    /// a `subscribe` grant, or with a token for that stream whose key still
    /// has one.
    pub fn require_stream(&self, stream: &TokenStream, scope: &Scope) -> Result<(), ServiceError> {
        match self {
            Self::Token {
                stream: opens,
                grants,
                ..
            } => {
                if opens != stream {
                    return Err(ServiceError::WrongStream);
                }
                if !grants.iter().any(|g| g.allows(Op::Subscribe, scope)) {
                    return Err(ServiceError::Forbidden(Op::Subscribe));
                }
                Ok(())
            }
            _ => self.require(Op::Subscribe, scope),
        }
    }

    /// When a token caller's access ends; streams it opened end then.
    pub fn expires(&self) -> Option<chrono::DateTime<Utc>> {
        match self {
            Self::Token { expires, .. } => Some(*expires),
            _ => None,
        }
    }

    /// [`Caller::may`], as an error to return. The scope's tenant, when it
    /// names one, goes into the request's log lines.
    pub fn require(&self, op: Op, scope: &Scope) -> Result<(), ServiceError> {
        if let Pattern::Exact(tenant) = &scope.tenant {
            crate::request_context::name_tenant(tenant.as_str());
        }
        if self.may(op, scope) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(op))
        }
    }

    /// Whether some grant allows `op` somewhere.
    pub fn may_anywhere(&self, op: Op) -> bool {
        match self {
            Self::Unrestricted => true,
            Self::Key { grants, .. } => grants
                .iter()
                .any(|g| g.ops.iter().any(|granted| granted.allows(op))),
            Self::Token { .. } => false,
        }
    }

    /// Whether any grant covers `scope`, for any operation: what listings
    /// show.
    pub fn sees(&self, scope: &Scope) -> bool {
        match self {
            Self::Unrestricted => true,
            Self::Key { grants, .. } => grants
                .iter()
                .any(|g| !g.ops.is_empty() && g.scope.contains(scope)),
            Self::Token { .. } => false,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .map(|value| value.as_bytes());
        Ok(app.keys.identify(header)?)
    }
}

/// The caller of a subscribe endpoint: an API key in the `Authorization`
/// header, or else a subscribe token as `?token=`.
#[derive(Debug)]
pub struct Subscriber(pub Caller);

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

impl FromRequestParts<AppState> for Subscriber {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            // A query that does not parse has no token; the handler refuses
            // it by name once the caller is known.
            let query = axum::extract::Query::<TokenQuery>::try_from_uri(&parts.uri);
            if let Ok(axum::extract::Query(TokenQuery { token: Some(token) })) = query {
                return Ok(Self(app.keys.identify_token(&token)?));
            }
        }
        Caller::from_request_parts(parts, app).await.map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KeyStore {
        let hash = hex::encode(Sha256::digest(b"s3cret"));
        KeyStore::new(&AuthConfig {
            enabled: true,
            keys: vec![ApiKeyConfig {
                id: "planner".into(),
                key_sha256: hash,
                grants: vec![
                    Grant {
                        namespace: "agents".into(),
                        tenant: "demo".into(),
                        ops: vec![Op::Publish],
                    },
                    Grant {
                        namespace: "*".into(),
                        tenant: "acme".into(),
                        ops: vec![Op::Admin],
                    },
                ],
            }],
            ..AuthConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_known_secret_identifies_its_key() {
        let caller = store().identify(Some(b"Bearer s3cret")).unwrap();
        assert_eq!(caller.principal(), Some("planner"));
        let scope = |ns, tenant| Scope::new(ns, tenant, None).unwrap();
        assert!(caller.may(Op::Publish, &scope(Some("agents"), Some("demo"))));
        assert!(!caller.may(Op::Subscribe, &scope(Some("agents"), Some("demo"))));
        assert!(!caller.may(Op::Publish, &scope(Some("other"), Some("demo"))));
        assert!(
            caller.may(Op::Subscribe, &scope(Some("any"), Some("acme"))),
            "admin allows all ops"
        );
        assert!(
            caller.may(Op::Admin, &scope(None, Some("acme"))),
            "* covers every namespace"
        );
        assert!(
            !caller.may(Op::Publish, &scope(Some("agents"), None)),
            "a named tenant is not all tenants"
        );
        let topic = acteon_core::TopicName::new("agents", "demo", "inbox").unwrap();
        assert!(caller.may(Op::Publish, &Scope::topic(&topic)));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for header in [&b"bearer s3cret"[..], b"BEARER s3cret", b"Bearer s3cret"] {
            let caller = store().identify(Some(header)).unwrap();
            assert_eq!(caller.principal(), Some("planner"));
        }
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_unauthorized() {
        let store = store();
        for header in [
            None,
            Some(&b"s3cret"[..]),
            Some(b"Basic s3cret"),
            Some(b"Bearer "),
            Some(b"Bearer nope"),
            Some(b"Bearers3cret"),
        ] {
            assert!(
                matches!(store.identify(header), Err(ServiceError::Unauthorized(_))),
                "{header:?}"
            );
        }
    }

    #[test]
    fn bad_hashes_and_duplicate_ids_are_refused() {
        let key = |id: &str, hash: &str| ApiKeyConfig {
            id: id.into(),
            key_sha256: hash.into(),
            grants: vec![],
        };
        let bad = AuthConfig {
            keys: vec![key("a", "abc")],
            ..AuthConfig::default()
        };
        assert!(matches!(
            KeyStore::new(&bad),
            Err(AuthError::BadHash { .. })
        ));
        let hash = "0".repeat(64);
        let twice = AuthConfig {
            keys: vec![key("a", &hash), key("a", &hash)],
            ..AuthConfig::default()
        };
        assert!(matches!(
            KeyStore::new(&twice),
            Err(AuthError::DuplicateId(_))
        ));
        let same_secret = AuthConfig {
            keys: vec![key("a", &hash), key("b", &hash)],
            ..AuthConfig::default()
        };
        assert!(matches!(
            KeyStore::new(&same_secret),
            Err(AuthError::DuplicateHash(..))
        ));
    }
}
