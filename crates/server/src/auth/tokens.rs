//! Subscribe tokens: short-lived credentials for one stream, for clients
//! that cannot send an `Authorization` header (a browser's `EventSource`).
//!
//! A token is `hex(claims).hex(HMAC-SHA256(claims))`: the server keeps no
//! record of it, and any server with the same `[auth] sse_token_key`
//! accepts it. Without that key each process signs with a random one, so
//! its tokens end with it.

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

/// The longest token accepted, in bytes; anything longer is not one.
const MAX_TOKEN_LEN: usize = 2_048;

/// `[auth] sse_token_key`: kept out of `Debug` output, like the signer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenKey(pub String);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// What a token opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum TokenStream {
    /// `GET /v1/bus/subscribe/{subscription_id}?topic=` (Kafka name), in
    /// either mode. The id is bound too, so the holder joins no other
    /// subscription's group.
    Topic {
        topic: String,
        subscription_id: String,
    },
    /// `GET /v1/bus/subscriptions/{namespace}/{tenant}/{id}/events`, and
    /// the settlements of what it delivers.
    Subscription {
        namespace: String,
        tenant: String,
        id: String,
    },
}

impl fmt::Display for TokenStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Topic {
                topic,
                subscription_id,
            } => write!(f, "topic {topic} as {subscription_id}"),
            Self::Subscription {
                namespace,
                tenant,
                id,
            } => write!(f, "subscription {namespace}/{tenant}/{id}"),
        }
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The key it was issued to, for limits and audit; none without auth.
    pub key: Option<String>,
    /// The start of that key's hash, so a key given a new secret under the
    /// same id does not keep the old secret's tokens.
    #[serde(default)]
    pub fingerprint: String,
    pub stream: TokenStream,
    /// Unix seconds.
    pub expires: i64,
}

/// A token that opens nothing.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("invalid subscribe token")]
    Invalid,
    #[error("subscribe token expired; ask for a new one")]
    Expired,
}

/// Issues and checks tokens with one key.
pub struct TokenSigner {
    key: [u8; 32],
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner { .. }")
    }
}

type Signature = Hmac<Sha256>;

impl TokenSigner {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// A signer with a key of its own, known to this process only.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self::new(key))
    }

    fn mac(&self) -> Signature {
        Signature::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let body = serde_json::to_vec(claims).expect("claims serialise");
        let mut mac = self.mac();
        mac.update(&body);
        let tag = mac.finalize().into_bytes();
        format!("{}.{}", hex::encode(&body), hex::encode(tag))
    }

    /// The claims of a token this key signed that has not expired at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let (body, tag) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let body = hex::decode(body).map_err(|_| TokenError::Invalid)?;
        let tag = hex::decode(tag).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        mac.update(&body);
        // Constant time, so timing does not tell how much of a tag was right.
        mac.verify_slice(&tag).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Invalid)?;
        if claims.expires <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: i64) -> Claims {
        Claims {
            key: Some("browser".into()),
            fingerprint: "0011".into(),
            stream: TokenStream::Topic {
                topic: "agents.demo.inbox".into(),
                subscription_id: "page".into(),
            },
            expires,
        }
    }

    #[test]
    fn a_signed_token_opens_its_stream_until_it_expires() {
        let signer = TokenSigner::new([7; 32]);
        let now = Utc::now();
        let token = signer.issue(&claims(now.timestamp() + 60));
        assert_eq!(
            signer.verify(&token, now).unwrap(),
            claims(now.timestamp() + 60)
        );
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(signer.verify(&token, later), Err(TokenError::Expired));
    }

    #[test]
    fn altered_foreign_and_malformed_tokens_are_refused() {
        let signer = TokenSigner::new([7; 32]);
        let now = Utc::now();
        let token = signer.issue(&claims(now.timestamp() + 60));
        let other = TokenSigner::new([8; 32]);
        assert_eq!(other.verify(&token, now), Err(TokenError::Invalid));
        // Claims for another topic under the original signature.
        let (_, tag) = token.split_once('.').unwrap();
        let mut forged = claims(now.timestamp() + 60);
        forged.stream = TokenStream::Topic {
            topic: "agents.other.inbox".into(),
            subscription_id: "page".into(),
        };
        let forged = format!(
            "{}.{tag}",
            hex::encode(serde_json::to_vec(&forged).unwrap())
        );
        assert_eq!(signer.verify(&forged, now), Err(TokenError::Invalid));
        for bad in ["", ".", "abc", "zz.zz", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(signer.verify(bad, now), Err(TokenError::Invalid), "{bad}");
        }
    }
}
