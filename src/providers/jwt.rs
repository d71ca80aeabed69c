//! HS256 JWTs (RFC 7519 / RFC 7515) for the ALTU SDK connector: we sign every event we
//! send and verify every event the platform sends (`docs/connector-protocol.md`).
//! Signing and signature checks are `jsonwebtoken`'s; the validation rules (60 s
//! lifetime, 30 s skew, `jti` replay) are ours, in [`Validation`]. The sandbox keeps an
//! independent implementation on purpose, so the two check each other.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind as JwtKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};

/// Why a token was refused. Messages never contain the key or the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not `HS256` (`none` and RS/ES algorithms are refused).
    #[error("unsupported algorithm (only HS256)")]
    Algorithm,
    /// The HMAC does not match.
    #[error("bad signature")]
    Signature,
    /// A required claim is missing or has the wrong type.
    #[error("missing or invalid claim `{0}`")]
    Claim(&'static str),
    /// `exp` is in the past (beyond the allowed skew).
    #[error("token expired")]
    Expired,
    /// `iat` is in the future (beyond the allowed skew).
    #[error("token issued in the future")]
    NotYetValid,
    /// `exp - iat` exceeds the maximum lifetime.
    #[error("token lifetime too long")]
    Lifetime,
    /// `iss` or `aud` is not the expected value.
    #[error("unexpected `{0}`")]
    Mismatch(&'static str),
    /// The `jti` was already used.
    #[error("token replayed")]
    Replay,
}

/// Signs `claims` (a JSON object) with HS256; the header is `{"typ":"JWT","alg":"HS256"}`.
pub fn sign_hs256(claims: &Value, key: &[u8]) -> String {
    // Encoding a JSON value with an HMAC key has no failure mode but a broken crypto
    // provider; an empty token is then refused by every receiver.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap_or_default()
}

/// Checks the signature (constant time) and the `alg`, and returns the claims. Does not
/// look at times or other claims: see [`Validation::validate`].
pub fn verify_hs256(token: &str, key: &[u8]) -> Result<Value, JwtError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    // Classify the algorithm ourselves: `none` is not even a name jsonwebtoken parses.
    let header: Value = decode_json(h)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Algorithm);
    }
    let mut rules = jsonwebtoken::Validation::new(Algorithm::HS256);
    rules.required_spec_claims = HashSet::new();
    rules.validate_exp = false;
    rules.validate_nbf = false;
    rules.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(key), &rules)
        .map_err(|e| match e.kind() {
            JwtKind::InvalidSignature => JwtError::Signature,
            JwtKind::InvalidAlgorithm | JwtKind::InvalidAlgorithmName => JwtError::Algorithm,
            _ => JwtError::Malformed,
        })?;
    if !data.claims.is_object() {
        return Err(JwtError::Malformed);
    }
    Ok(data.claims)
}

/// The claims part of a token, unverified (used only to read our own tokens' `exp`).
pub fn decode_claims_unverified(token: &str) -> Option<Value> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).ok()
}

fn decode_json(part: &str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// The claims of a connector event token we send (protocol §3).
pub fn connector_claims(
    issuer: &str,
    audience: &str,
    subject: &str,
    conversation_id: &str,
    now: u64,
    lifetime_s: u64,
) -> Value {
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "exp": now + lifetime_s.min(60),
        "jti": uuid::Uuid::new_v4().to_string(),
        "conversation_id": conversation_id,
    })
}

/// Rules for accepting a token (receiver side of protocol §3).
#[derive(Debug, Clone)]
pub struct Validation {
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required `aud`, if any.
    pub audience: Option<String>,
    /// Allowed clock skew in seconds (default 30).
    pub leeway_s: u64,
    /// Maximum `exp - iat` in seconds (default 60).
    pub max_lifetime_s: u64,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            issuer: None,
            audience: None,
            leeway_s: 30,
            max_lifetime_s: 60,
        }
    }
}

impl Validation {
    /// Verifies the signature and the claims at time `now` (unix seconds), then records
    /// the `jti` in `replay` (if given) so the same token is accepted once.
    pub fn validate(
        &self,
        token: &str,
        key: &[u8],
        now: u64,
        replay: Option<&JtiCache>,
    ) -> Result<Value, JwtError> {
        let claims = verify_hs256(token, key)?;
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .ok_or(JwtError::Claim("iat"))?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(JwtError::Claim("exp"))?;
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty())
            .ok_or(JwtError::Claim("jti"))?;
        if exp < iat || exp - iat > self.max_lifetime_s {
            return Err(JwtError::Lifetime);
        }
        if now > exp + self.leeway_s {
            return Err(JwtError::Expired);
        }
        if iat > now + self.leeway_s {
            return Err(JwtError::NotYetValid);
        }
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(JwtError::Mismatch("iss"));
            }
        }
        if let Some(aud) = &self.audience {
            if claims.get("aud").and_then(Value::as_str) != Some(aud.as_str()) {
                return Err(JwtError::Mismatch("aud"));
            }
        }
        if let Some(cache) = replay {
            if !cache.insert(jti, exp + self.leeway_s, now) {
                return Err(JwtError::Replay);
            }
        }
        Ok(claims)
    }
}

/// Seen `jti`s until they could no longer be valid anyway, to refuse replays.
#[derive(Debug, Default)]
pub struct JtiCache {
    seen: Mutex<HashMap<String, u64>>,
}

impl JtiCache {
    /// Records `jti` valid until `until` (unix seconds); `false` if it was already seen.
    /// Entries past their time are pruned on the way.
    pub fn insert(&self, jti: &str, until: u64, now: u64) -> bool {
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        seen.retain(|_, t| *t >= now);
        if seen.contains_key(jti) {
            return false;
        }
        seen.insert(jti.to_string(), until);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT_IO: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn jwt_io_vector_verifies_and_tokens_round_trip() {
        let claims = json!({"sub": "1234567890", "name": "John Doe", "iat": 1516239022});
        assert_eq!(
            verify_hs256(JWT_IO, b"your-256-bit-secret"),
            Ok(claims.clone())
        );
        assert_eq!(verify_hs256(JWT_IO, b"other"), Err(JwtError::Signature));
        let ours = sign_hs256(&claims, b"your-256-bit-secret");
        // Same payload and key as jwt.io; the header lists `typ` first.
        assert_eq!(ours.split('.').nth(1), JWT_IO.split('.').nth(1));
        assert_eq!(
            verify_hs256(&ours, b"your-256-bit-secret"),
            Ok(claims.clone())
        );
        assert_eq!(decode_claims_unverified(&ours), Some(claims));
    }

    #[test]
    fn tampering_and_alg_none_are_refused() {
        let mut parts: Vec<&str> = JWT_IO.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(br#"{"sub":"0","iat":1}"#);
        parts[1] = &evil;
        assert_eq!(
            verify_hs256(&parts.join("."), b"your-256-bit-secret"),
            Err(JwtError::Signature)
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#)
        );
        assert_eq!(verify_hs256(&none, b"k"), Err(JwtError::Algorithm));
        assert_eq!(verify_hs256("a.b", b"k"), Err(JwtError::Malformed));
        assert_eq!(verify_hs256("", b"k"), Err(JwtError::Malformed));
    }

    #[test]
    fn validation_rules() {
        let key = b"k";
        let v = Validation {
            issuer: Some("transbordo".into()),
            audience: Some("https://a".into()),
            ..Validation::default()
        };
        let now = 1_700_000_000;
        let ok = sign_hs256(
            &connector_claims("transbordo", "https://a", "s", "c", now, 60),
            key,
        );
        let cache = JtiCache::default();
        assert!(v.validate(&ok, key, now + 10, Some(&cache)).is_ok());
        assert_eq!(
            v.validate(&ok, key, now + 10, Some(&cache)),
            Err(JwtError::Replay)
        );
        // exp = now+60; accepted until exp + 30 s of skew.
        assert!(v.validate(&ok, key, now + 90, None).is_ok());
        assert_eq!(v.validate(&ok, key, now + 91, None), Err(JwtError::Expired));
        assert_eq!(
            v.validate(&ok, key, now - 31, None),
            Err(JwtError::NotYetValid)
        );
        let long = sign_hs256(&json!({"iat": now, "exp": now + 61, "jti": "j"}), key);
        assert_eq!(v.validate(&long, key, now, None), Err(JwtError::Lifetime));
        let other_aud = sign_hs256(
            &connector_claims("transbordo", "https://b", "s", "c", now, 60),
            key,
        );
        assert_eq!(
            v.validate(&other_aud, key, now, None),
            Err(JwtError::Mismatch("aud"))
        );
        let no_jti = sign_hs256(&json!({"iat": now, "exp": now + 10}), key);
        assert_eq!(
            v.validate(&no_jti, key, now, None),
            Err(JwtError::Claim("jti"))
        );
    }
}
