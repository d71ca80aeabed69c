//! Signatures the fakes produce and check: LivePerson's `x-liveperson-signature`, Zendesk's
//! `X-Zendesk-Webhook-Signature`, and the HS256 JWTs of the ALTU connector protocol.
//!
//! Public so tests (and receivers under test) can check what the sandbox sends.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};

use super::model::SignatureOrder;

type HmacSha1 = Hmac<sha1::Sha1>;
type HmacSha256 = Hmac<sha2::Sha256>;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// `sha1=<base64(HMAC-SHA1(client_secret, body))>`, the `x-liveperson-signature` value.
pub fn liveperson_signature(client_secret: &str, body: &[u8]) -> String {
    let mut mac = <HmacSha1 as Mac>::new_from_slice(client_secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha1={}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// `base64(HMAC-SHA256(secret, timestamp ‖ body))` (or body ‖ timestamp), the
/// `X-Zendesk-Webhook-Signature` value.
pub fn zendesk_signature(
    secret: &str,
    timestamp: &str,
    body: &[u8],
    order: SignatureOrder,
) -> String {
    let parts: [&[u8]; 2] = match order {
        SignatureOrder::TimestampBody => [timestamp.as_bytes(), body],
        SignatureOrder::BodyTimestamp => [body, timestamp.as_bytes()],
    };
    STANDARD.encode(
        hmac_sha256(secret.as_bytes(), &parts)
            .finalize()
            .into_bytes(),
    )
}

/// Why a JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// Header `alg` is not `HS256`.
    #[error("unsupported algorithm")]
    Algorithm,
    /// The signature does not match the key.
    #[error("bad signature")]
    Signature,
    /// A required claim is missing or not a number/string as required.
    #[error("missing or invalid claim `{0}`")]
    Claim(&'static str),
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `exp - iat` is over the allowed lifetime.
    #[error("token lifetime too long")]
    TooLongLived,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    NotYetValid,
    /// A claim (`iss`, `aud`, `sub`, `conversation_id`) has an unexpected value.
    #[error("unexpected claim `{0}`")]
    Mismatch(&'static str),
    /// The `jti` was already used.
    #[error("token replayed")]
    Replay,
}

/// Signs `claims` as an HS256 JWT (`{"alg":"HS256","typ":"JWT"}` header).
pub fn sign_hs256(key: &[u8], claims: &Value) -> String {
    sign_hs256_with_kid(key, None, claims)
}

/// Signs `claims` as an HS256 JWT, with an optional `kid` header.
pub fn sign_hs256_with_kid(key: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Map::new();
    header.insert("alg".into(), "HS256".into());
    header.insert("typ".into(), "JWT".into());
    if let Some(kid) = kid {
        header.insert("kid".into(), kid.into());
    }
    let h = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{h}.{c}");
    let sig = hmac_sha256(key, &[input.as_bytes()])
        .finalize()
        .into_bytes();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Checks an HS256 JWT's signature (constant time) and returns its claims. Does not look
/// at `exp`: see [`verify_connector`].
pub fn verify_hs256(key: &[u8], token: &str) -> Result<Map<String, Value>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let input = format!("{h}.{c}");
    hmac_sha256(key, &[input.as_bytes()])
        .verify_slice(&sig)
        .map_err(|_| JwtError::Signature)?;
    let claims: Value = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    match claims {
        Value::Object(m) => Ok(m),
        _ => Err(JwtError::Malformed),
    }
}

/// Clock skew the connector protocol allows (`docs/connector-protocol.md` §3).
pub const CONNECTOR_SKEW_S: u64 = 30;

/// Longest connector token lifetime (`exp - iat`).
pub const CONNECTOR_MAX_LIFETIME_S: u64 = 60;

/// Verifies a connector JWT per `docs/connector-protocol.md` §3, rules 1–4: HS256 only,
/// signature, `iat`/`exp`/`jti` present, `exp - iat` ≤ 60 s, and at most 30 s of clock skew
/// (refused when `now > exp + 30` or `iat > now + 30`). The caller checks `iss`, `aud`,
/// `sub`, `conversation_id` and the `jti` replay.
pub fn verify_connector(key: &[u8], token: &str, now: u64) -> Result<Map<String, Value>, JwtError> {
    let claims = verify_hs256(key, token)?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(JwtError::Claim("iat"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(JwtError::Claim("exp"))?;
    match claims.get("jti") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return Err(JwtError::Claim("jti")),
    }
    if exp < iat || exp - iat > CONNECTOR_MAX_LIFETIME_S {
        return Err(JwtError::TooLongLived);
    }
    if now > exp + CONNECTOR_SKEW_S {
        return Err(JwtError::Expired);
    }
    if iat > now + CONNECTOR_SKEW_S {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

/// The path part of a URL (`https://h:1/a/b?q` → `/a/b`; a bare path is returned as is),
/// without a trailing `/`. Used to compare `aud` with the URL a request was sent to while
/// ignoring the host and port (proxies, published ports).
pub fn url_path(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            match after.find('/') {
                Some(j) => &after[j..],
                None => "",
            }
        }
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let p = rest[..end].trim_end_matches('/');
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

/// The claims of a connector event token (protocol §3): `iss`, `aud` (the URL the request
/// goes to), `sub` (the integration's `access_token`), `iat` = `now`, `exp` = `now` +
/// `ttl_s`, a fresh UUID v4 `jti`, and `conversation_id` (the envelope's).
pub fn connector_claims(
    iss: &str,
    aud: &str,
    sub: &str,
    conversation_id: &str,
    now: u64,
    ttl_s: u64,
) -> Value {
    serde_json::json!({
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid::Uuid::new_v4().to_string(),
        "conversation_id": conversation_id,
    })
}

/// A fresh connector JWT without the binding claims: `iat` = now, `exp` = now + `ttl_s`, random `jti`.
pub fn connector_token(key: &[u8], now: u64, ttl_s: u64) -> String {
    sign_hs256(
        key,
        &serde_json::json!({"iat": now, "exp": now + ttl_s, "jti": uuid::Uuid::new_v4().to_string()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_roundtrip_and_tamper() {
        let t = connector_token(b"k", 1000, 60);
        assert!(verify_connector(b"k", &t, 1001).is_ok());
        assert_eq!(
            verify_connector(b"other", &t, 1001),
            Err(JwtError::Signature)
        );
        // Expired only past exp + the 30 s skew the protocol allows.
        assert!(verify_connector(b"k", &t, 1090).is_ok());
        assert_eq!(verify_connector(b"k", &t, 1091), Err(JwtError::Expired));
        let long = connector_token(b"k", 1000, 61);
        assert_eq!(
            verify_connector(b"k", &long, 1001),
            Err(JwtError::TooLongLived)
        );
        assert_eq!(verify_hs256(b"k", "a.b"), Err(JwtError::Malformed));
    }

    #[test]
    fn connector_rules_and_url_path() {
        let t = sign_hs256(b"k", &connector_claims("a", "u", "s", "c", 1000, 60));
        assert!(verify_connector(b"k", &t, 1090).is_ok());
        assert_eq!(verify_connector(b"k", &t, 1091), Err(JwtError::Expired));
        assert!(verify_connector(b"k", &t, 970).is_ok());
        assert_eq!(verify_connector(b"k", &t, 969), Err(JwtError::NotYetValid));
        let long = sign_hs256(b"k", &connector_claims("a", "u", "s", "c", 1000, 61));
        assert_eq!(
            verify_connector(b"k", &long, 1000),
            Err(JwtError::TooLongLived)
        );
        assert_eq!(url_path("http://127.0.0.1:9/altu/events"), "/altu/events");
        assert_eq!(url_path("https://x/altu/events/?a=1"), "/altu/events");
        assert_eq!(url_path("https://x"), "/");
        assert_eq!(url_path("/altu/events"), "/altu/events");
    }
}
