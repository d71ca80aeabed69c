//! Signature and token checks, with fixed vectors.

use base64::Engine as _;
use serde_json::json;
use transbordo::service::auth::{self, AuthError};
use transbordo::service::events::sign_event;

#[test]
fn zendesk_vector_timestamp_then_body() {
    let secret = "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=";
    let (body, ts) = (br#"{"say": "hello"}"#, "2021-07-25T10:00:00Z");
    assert_eq!(
        auth::zendesk_signature(secret, ts, body),
        "Rry/4TtIdFyawtXXp8QdI6tlAUUQ/5kL1OTp5qo/ZIk="
    );
    let now = auth::parse_rfc3339_ms(ts).unwrap() + 60_000;
    let sig = "Rry/4TtIdFyawtXXp8QdI6tlAUUQ/5kL1OTp5qo/ZIk=";
    assert_eq!(
        auth::verify_zendesk(secret, Some(sig), Some(ts), body, now, 300),
        Ok(())
    );
    // The old page's body ‖ timestamp value is deliberately not accepted.
    let old = "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw=";
    assert_eq!(
        auth::verify_zendesk(secret, Some(old), Some(ts), body, now, 300),
        Err(AuthError::BadSignature)
    );
    // Outside the replay window.
    assert!(matches!(
        auth::verify_zendesk(secret, Some(sig), Some(ts), body, now + 600_000, 300),
        Err(AuthError::Expired(_))
    ));
    assert_eq!(
        auth::verify_zendesk(secret, None, Some(ts), body, now, 300),
        Err(AuthError::Missing("x-zendesk-webhook-signature"))
    );
    assert_eq!(
        auth::verify_zendesk(secret, Some("%%%"), Some(ts), body, now, 300),
        Err(AuthError::Malformed("x-zendesk-webhook-signature"))
    );
}

#[test]
fn liveperson_base64_hmac_sha1_over_raw_bytes() {
    // Computed independently (Python hmac) for this exact compact body.
    let secret = "rl9hacst6kqilbofup64n11ga3";
    let body =
        br#"{"kind":"notification","body":{"changes":[]},"type":"ms.MessagingEventNotification"}"#;
    let sig = "sha1=r56M1spdk/2bQjh6A+CgxV4A1YY=";
    assert_eq!(auth::liveperson_signature(secret, body), sig);
    assert_eq!(auth::verify_liveperson(secret, Some(sig), body), Ok(()));
    // Re-serialized JSON (spaces) no longer matches: raw bytes are what is signed.
    let reser =
        serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(body).unwrap())
            .unwrap();
    assert_eq!(
        auth::verify_liveperson(secret, Some(sig), &reser),
        Err(AuthError::BadSignature)
    );
    // Emoji bodies verify byte for byte.
    let emoji = "{\"message\":\"olá 👋\"}".as_bytes();
    let s = auth::liveperson_signature(secret, emoji);
    assert_eq!(auth::verify_liveperson(secret, Some(&s), emoji), Ok(()));
    // hex instead of base64, missing prefix, missing header.
    assert_eq!(
        auth::verify_liveperson(secret, Some("sha1=af12"), body),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        auth::verify_liveperson(secret, Some("r56M1spdk/2bQjh6A+CgxV4A1YY="), body),
        Err(AuthError::Malformed("x-liveperson-signature"))
    );
    assert_eq!(
        auth::verify_liveperson(secret, None, body),
        Err(AuthError::Missing("x-liveperson-signature"))
    );
}

#[test]
fn builder_signature_is_hex_hmac_sha256_of_timestamp_dot_body() {
    // Computed independently (Python hmac).
    assert_eq!(
        sign_event("builder-secret", "1700000000", br#"{"a":1}"#),
        "sha256=6be303e0098f919d01caee88731cfe6a0be3052d168594237e78269b770e995f"
    );
}

#[test]
fn connector_jwt_rules() {
    let key = "k";
    let now = 1_800_000_000i64;
    let tok = auth::sign_jwt(key, &json!({"iat": now, "exp": now + 60, "jti": "j"}));
    let bearer = format!("Bearer {tok}");
    let c = auth::verify_jwt(key, Some(&bearer), now + 10, 30).unwrap();
    assert_eq!((c.iat, c.exp, c.jti.as_str()), (now, now + 60, "j"));
    // Skew: up to 30 s early or late.
    assert!(auth::verify_jwt(key, Some(&bearer), now - 29, 30).is_ok());
    assert!(auth::verify_jwt(key, Some(&bearer), now - 31, 30).is_err());
    assert!(auth::verify_jwt(key, Some(&bearer), now + 89, 30).is_ok());
    assert!(auth::verify_jwt(key, Some(&bearer), now + 91, 30).is_err());
    // Lifetime over 60 s, missing jti, wrong key, alg none, garbage.
    let long = auth::sign_jwt(key, &json!({"iat": now, "exp": now + 61, "jti": "j"}));
    assert!(matches!(
        auth::verify_jwt(key, Some(&format!("Bearer {long}")), now, 30),
        Err(AuthError::Expired(_))
    ));
    let nojti = auth::sign_jwt(key, &json!({"iat": now, "exp": now + 10}));
    assert!(auth::verify_jwt(key, Some(&format!("Bearer {nojti}")), now, 30).is_err());
    assert_eq!(
        auth::verify_jwt("other", Some(&bearer), now, 30),
        Err(AuthError::BadSignature)
    );
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none"}"#),
        b64.encode(json!({"iat": now, "exp": now + 10, "jti": "x"}).to_string())
    );
    assert!(auth::verify_jwt(key, Some(&format!("Bearer {none}")), now, 30).is_err());
    assert!(auth::verify_jwt(key, Some("Bearer a.b"), now, 30).is_err());
    assert!(
        auth::verify_jwt(key, Some(&tok), now, 30).is_err(),
        "Bearer prefix required"
    );
}

#[test]
fn rfc3339_timestamps() {
    assert_eq!(auth::parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        auth::parse_rfc3339_ms("2021-07-25T10:00:00Z"),
        Some(1_627_207_200_000)
    );
    assert_eq!(
        auth::parse_rfc3339_ms("2021-07-25T12:00:00.5+02:00"),
        Some(1_627_207_200_500)
    );
    for bad in [
        "",
        "2021-07-25",
        "2021-07-25T10:00:00",
        "2021-13-25T10:00:00Z",
        "yesterday at noon!!",
    ] {
        assert_eq!(auth::parse_rfc3339_ms(bad), None, "{bad}");
    }
}

#[test]
fn connector_claim_binding() {
    let now = 1_700_000_000;
    let claims = |patch: serde_json::Value| {
        let mut c = json!({"iss": "altu", "aud": "https://proxy:8443/webhooks/altu/3/",
            "sub": "tok", "iat": now, "exp": now + 30, "jti": "j", "conversation_id": "h1"});
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        let t = auth::sign_jwt("k", &c);
        auth::verify_jwt("k", Some(&format!("Bearer {t}")), now, 30).unwrap()
    };
    let check =
        |c: &auth::JwtClaims| auth::check_connector_claims(c, "tok", "/webhooks/altu/3", "h1");
    assert_eq!(check(&claims(json!({}))), Ok(()));
    assert_eq!(
        check(&claims(json!({"sub": "x"}))),
        Err(auth::AuthError::Claim("sub"))
    );
    assert_eq!(
        check(&claims(json!({"iss": "transbordo"}))),
        Err(auth::AuthError::Claim("iss"))
    );
    assert_eq!(
        check(&claims(json!({"iss": ""}))),
        Err(auth::AuthError::Claim("iss"))
    );
    assert_eq!(
        check(&claims(json!({"aud": "https://proxy/webhooks/altu/4"}))),
        Err(auth::AuthError::Claim("aud"))
    );
    assert_eq!(
        check(&claims(json!({"conversation_id": "h2"}))),
        Err(auth::AuthError::Claim("conversation_id"))
    );
    assert_eq!(auth::url_path("http://127.0.0.1:1/a/b?x=1"), "/a/b");
    assert_eq!(auth::url_path("/a/b/"), "/a/b");
}
