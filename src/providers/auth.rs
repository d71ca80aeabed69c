//! Webhook authentication: checked on the raw body bytes, before anything is parsed,
//! with constant-time comparisons (`Mac::verify_slice`).
//!
//! - LivePerson: `x-liveperson-signature: sha1=<base64(HMAC-SHA1(client_secret, body))>`.
//! - Zendesk: `X-Zendesk-Webhook-Signature: base64(HMAC-SHA256(secret, TIMESTAMP ‖ BODY))`
//!   with `X-Zendesk-Webhook-Signature-Timestamp` (ISO-8601) inside a replay window.
//! - ALTU SDK connector (`docs/connector-protocol.md` §3, §5): `Authorization: Bearer
//!   <JWT>`, HS256 with `access_key`, claims `iat`, `exp` (lifetime ≤ 60 s), `jti` (single
//!   use; checked by the caller against the seen-events table), accepted within a clock
//!   skew ([`verify_jwt`]); then [`check_connector_claims`]: `sub` = the integration's
//!   `access_token`, `iss` present and not ours (`"transbordo"`, so our own tokens cannot be
//!   replayed at us), `aud` names this receiver ([`Audience`]: the full URL when the
//!   config's `public_url` is set, else only its path) and `conversation_id` = the
//!   envelope's.
//!
//! And the checks that keep web pages out of a loopback service (shared with the
//! playground's page server): [`loopback_host`] against DNS rebinding, [`json_content_type`]
//! against cross-site form and `no-cors` posts (a browser sends `application/json` across
//! sites only after a CORS preflight, which nothing here ever answers).

use crate::providers::jwt;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;
use sha2::Sha256;

/// Why a webhook was not believed. Messages never include secrets or signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The signature or token header is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The header is not in the expected format.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The signature does not match.
    #[error("signature mismatch")]
    BadSignature,
    /// The timestamp or token is outside the accepted window.
    #[error("{0}")]
    Expired(String),
    /// The integration has no secret to verify with.
    #[error("no webhook secret configured for this integration")]
    NoSecret,
    /// A token claim is missing or has an unexpected value.
    #[error("unexpected or missing claim `{0}`")]
    Claim(&'static str),
    /// The token's `aud` is not this receiver's full URL (with `public_url` set). Shown
    /// only to a caller whose token verified, and the URL is public anyway: it tells
    /// the platform's operator what to put in `aud`.
    #[error("claim `aud` must be this receiver's URL, {0}")]
    Audience(String),
}

fn mac256(key: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// The LivePerson header value for `body`: `sha1=<base64>`.
pub fn liveperson_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha1={}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Verifies `x-liveperson-signature` over the raw body.
pub fn verify_liveperson(secret: &str, header: Option<&str>, body: &[u8]) -> Result<(), AuthError> {
    let header = header.ok_or(AuthError::Missing("x-liveperson-signature"))?;
    let b64 = header
        .trim()
        .strip_prefix("sha1=")
        .ok_or(AuthError::Malformed("x-liveperson-signature"))?;
    let sig = STANDARD
        .decode(b64)
        .map_err(|_| AuthError::Malformed("x-liveperson-signature"))?;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| AuthError::BadSignature)
}

/// The Zendesk signature: `base64(HMAC-SHA256(secret, timestamp ‖ body))`.
pub fn zendesk_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = mac256(secret);
    mac.update(timestamp.as_bytes());
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Verifies a Zendesk webhook: signature over timestamp ‖ body, and the timestamp
/// within `window_s` of `now_ms` (either direction).
pub fn verify_zendesk(
    secret: &str,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_ms: i64,
    window_s: u64,
) -> Result<(), AuthError> {
    let signature = signature.ok_or(AuthError::Missing("x-zendesk-webhook-signature"))?;
    let timestamp = timestamp.ok_or(AuthError::Missing("x-zendesk-webhook-signature-timestamp"))?;
    let sig = STANDARD
        .decode(signature.trim())
        .map_err(|_| AuthError::Malformed("x-zendesk-webhook-signature"))?;
    let mut mac = mac256(secret);
    mac.update(timestamp.as_bytes());
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| AuthError::BadSignature)?;
    let ts = parse_rfc3339_ms(timestamp.trim()).ok_or(AuthError::Malformed(
        "x-zendesk-webhook-signature-timestamp",
    ))?;
    if (now_ms - ts).unsigned_abs() > window_s.saturating_mul(1000) {
        return Err(AuthError::Expired(format!(
            "timestamp outside the {window_s} s replay window"
        )));
    }
    Ok(())
}

/// Claims of a verified connector JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    /// Issued at (Unix s).
    pub iat: i64,
    /// Expires (Unix s).
    pub exp: i64,
    /// Unique token id, single use.
    pub jti: String,
    /// Issuer (the platform's name), if present.
    pub iss: Option<String>,
    /// Audience (the URL the token was made for), if present.
    pub aud: Option<String>,
    /// Subject (the integration's `access_token`), if present.
    pub sub: Option<String>,
    /// The conversation the token is bound to, if present.
    pub conversation_id: Option<String>,
}

/// Our own `iss` (see `crate::providers::client::CONNECTOR_ISSUER`): refused on inbound
/// tokens, so a token we sent to the platform cannot be replayed at us.
pub const OWN_ISSUER: &str = crate::providers::client::CONNECTOR_ISSUER;

/// The path part of a URL (`https://h:1/a/b?q` → `/a/b`; a bare path is kept), without a
/// trailing `/`.
pub fn url_path(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map_or("", |j| &after[j..])
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

/// What a connector token's `aud` must name (protocol §3: "the URL the request is sent
/// to").
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// No `public_url` in the config: only paths are compared. `aud`'s path is, for a
    /// value with `://`, what follows the first `/` after it, up to `?` or `#` (nothing:
    /// `/`); a value without `://` is taken as a path. Trailing `/`s are dropped on both
    /// sides and the rest is compared byte for byte (case-sensitive, no decoding) with
    /// the request path. Scheme, host, port, query and fragment are **not** checked: a
    /// token made for another host with the same path is accepted.
    Path(&'a str),
    /// `public_url` set: `aud` must be exactly this URL ([`receiver_url`]) after URL
    /// parsing (WHATWG), i.e. same scheme, host and port (letter case of scheme and host,
    /// and an explicit default port, `:443` for https, `:80` for http, do not matter),
    /// same path (a trailing `/` does: `…/altu/3/` is another URL; `.`/`..` segments are
    /// resolved), and no user name, password, query or fragment.
    Url(&'a reqwest::Url),
}

/// The full URL of the receiver at `request_path` behind `public_url` (normalized by
/// the config: no trailing `/`): `https://h/tb` + `/webhooks/altu/3` →
/// `https://h/tb/webhooks/altu/3`.
pub fn receiver_url(public_url: &reqwest::Url, request_path: &str) -> reqwest::Url {
    let mut url = public_url.clone();
    let path = format!("{}{request_path}", public_url.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// Whether `aud` names the receiver (see [`Audience`]).
pub fn check_audience(aud: Option<&str>, expected: Audience<'_>) -> Result<(), AuthError> {
    match expected {
        Audience::Path(request_path) => {
            if aud.map(url_path) != Some(url_path(request_path)) {
                return Err(AuthError::Claim("aud"));
            }
        }
        Audience::Url(want) => {
            let got = aud.and_then(|a| reqwest::Url::parse(a).ok());
            // `Url` equality is equality of the normalized serializations.
            if got.as_ref() != Some(want) {
                return Err(AuthError::Audience(want.to_string()));
            }
        }
    }
    Ok(())
}

/// The connector binding checks of protocol §3 on verified claims: `sub` = `access_token`,
/// `iss` present and not [`OWN_ISSUER`], `aud`'s path = `request_path` (host ignored:
/// [`Audience::Path`]), `conversation_id` = the envelope's `conversation_id`.
pub fn check_connector_claims(
    claims: &JwtClaims,
    access_token: &str,
    request_path: &str,
    conversation_id: &str,
) -> Result<(), AuthError> {
    check_connector_binding(
        claims,
        access_token,
        Audience::Path(request_path),
        conversation_id,
    )
}

/// [`check_connector_claims`] with the `aud` rule given: [`Audience::Url`] when the
/// service knows its public URL.
pub fn check_connector_binding(
    claims: &JwtClaims,
    access_token: &str,
    audience: Audience<'_>,
    conversation_id: &str,
) -> Result<(), AuthError> {
    if claims.sub.as_deref() != Some(access_token) {
        return Err(AuthError::Claim("sub"));
    }
    match claims.iss.as_deref() {
        Some(iss) if !iss.is_empty() && iss != OWN_ISSUER => {}
        _ => return Err(AuthError::Claim("iss")),
    }
    check_audience(claims.aud.as_deref(), audience)?;
    if claims.conversation_id.as_deref() != Some(conversation_id) {
        return Err(AuthError::Claim("conversation_id"));
    }
    Ok(())
}

/// Longest accepted token lifetime (`exp - iat`).
pub const JWT_MAX_LIFETIME_S: i64 = 60;

/// Makes an HS256 JWT (what the connector side sends; also used by tests and fakes).
pub fn sign_jwt(key: &str, claims: &Value) -> String {
    jwt::sign_hs256(claims, key.as_bytes())
}

/// Verifies `Authorization: Bearer <JWT>` (HS256 only; `alg` must say so), its
/// lifetime and the clock skew. The caller checks `jti` for replay. Signature and
/// decoding are the provider client's (`providers::jwt`), so both directions of the
/// connector verify tokens with one implementation.
pub fn verify_jwt(
    key: &str,
    authorization: Option<&str>,
    now_s: i64,
    skew_s: i64,
) -> Result<JwtClaims, AuthError> {
    let auth = authorization.ok_or(AuthError::Missing("authorization"))?;
    let token = auth
        .trim()
        .strip_prefix("Bearer ")
        .ok_or(AuthError::Malformed("authorization"))?
        .trim();
    let claims = jwt::verify_hs256(token, key.as_bytes()).map_err(|e| match e {
        jwt::JwtError::Signature => AuthError::BadSignature,
        _ => AuthError::Malformed("authorization"),
    })?;
    let iat = claims.get("iat").and_then(Value::as_i64);
    let exp = claims.get("exp").and_then(Value::as_i64);
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty());
    let (Some(iat), Some(exp), Some(jti)) = (iat, exp, jti) else {
        return Err(AuthError::Malformed("authorization"));
    };
    if exp <= iat || exp - iat > JWT_MAX_LIFETIME_S {
        return Err(AuthError::Expired(format!(
            "token lifetime must be 1..={JWT_MAX_LIFETIME_S} s"
        )));
    }
    if now_s + skew_s < iat {
        return Err(AuthError::Expired("token issued in the future".into()));
    }
    if now_s - skew_s > exp {
        return Err(AuthError::Expired("token expired".into()));
    }
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(JwtClaims {
        iat,
        exp,
        jti: jti.to_string(),
        iss: text("iss"),
        aud: text("aud"),
        sub: text("sub"),
        conversation_id: text("conversation_id"),
    })
}

/// Whether a `Host` value names this machine: `localhost`, a `127.0.0.0/8` address or
/// `[::1]`, with or without a port. A loopback server that answers any other name can be
/// reached by a web page whose own domain was re-pointed at 127.0.0.1 (DNS rebinding).
pub fn loopback_host(host: &str) -> bool {
    let (name, _) = split_host_port(host);
    name.eq_ignore_ascii_case("localhost")
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A `Host` value as its name and its port text, when it has one (`[::1]:8080` →
/// (`[::1]`, `8080`); `[::1]` → (`[::1]`, none)). What follows the last `:` is a port
/// only when it is digits (an IPv6 literal's colons are inside its brackets).
pub fn split_host_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, Some(port))
        }
        _ => (host, None),
    }
}

/// Whether a `Content-Type` value is JSON as the builder API takes it:
/// `application/json`, alone or with `charset=utf-8` (case-insensitive, quotes allowed).
/// `text/plain`, forms and `multipart` are exactly what a page on another site can send
/// without asking, so they are refused even when the bytes happen to be JSON.
pub fn json_content_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((k, v)) => {
            k.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        // `application/json;` (a dangling separator) is harmless.
        None => param.trim().is_empty(),
    })
}

/// Parses an RFC 3339 / ISO-8601 UTC-or-offset timestamp (`2021-07-25T10:00:00Z`,
/// `…T10:00:00.123+02:00`) to Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let first3: String = frac.chars().chain("000".chars()).take(3).collect();
        millis = first3.parse().ok()?;
    }
    let offset_s = match s.get(i..)? {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh: i64 = o.get(1..3)?.parse().ok()?;
            let om: i64 = o.get(4..6)?.parse().ok()?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::{json_content_type, loopback_host};

    #[test]
    fn only_loopback_host_names_pass() {
        for ok in [
            "127.0.0.1:8930",
            "localhost:8930",
            "localhost",
            "LocalHost:1",
            "[::1]:8930",
            "[::1]",
            "127.0.0.2:1",
            "127.0.0.1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8930",
            "localhost.evil.example",
            "10.0.0.1:8930",
            "",
            ":8930",
            "127.0.0.1.evil.example",
            "[::2]:1",
            "0.0.0.0:8920",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn only_json_content_types_pass() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json;",
        ] {
            assert!(json_content_type(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "application/json; boundary=x",
            "application/jsonp",
            "application/json-patch+json",
        ] {
            assert!(!json_content_type(bad), "{bad}");
        }
    }
}
