//! OAuth 1.0a request signing, HMAC-SHA1 (RFC 5849 §3.4): what LivePerson's brand API
//! keys (the Messaging Interactions API) authenticate with. Used by the client to sign
//! and by the sandbox to verify, pinned by the signature of a published example.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The four credentials of an OAuth 1.0a request (LivePerson: app key, secret, access
/// token, access token secret).
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    /// `oauth_consumer_key` (LivePerson "app key").
    pub consumer_key: &'a str,
    /// The consumer secret (LivePerson "secret").
    pub consumer_secret: &'a str,
    /// `oauth_token` (LivePerson "access token").
    pub token: &'a str,
    /// The token secret (LivePerson "access token secret").
    pub token_secret: &'a str,
}

/// RFC 3986 percent-encoding of everything but the unreserved characters (§3.6).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The signature base string (§3.4.1): method, base URL (no query), and the sorted,
/// encoded parameters (query, form body, `oauth_*` without the signature).
pub fn base_string(method: &str, base_url: &str, params: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    enc.sort();
    let joined = enc
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(base_url),
        encode(&joined)
    )
}

/// `oauth_signature` (base64 HMAC-SHA1 keyed by `secret&token_secret`).
pub fn signature(
    keys: Keys<'_>,
    method: &str,
    base_url: &str,
    params: &[(String, String)],
) -> String {
    let key = format!(
        "{}&{}",
        encode(keys.consumer_secret),
        encode(keys.token_secret)
    );
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(base_string(method, base_url, params).as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The `oauth_*` protocol parameters of a request, without the signature.
pub fn protocol_params(keys: Keys<'_>, nonce: &str, timestamp: u64) -> Vec<(String, String)> {
    vec![
        ("oauth_consumer_key".into(), keys.consumer_key.into()),
        ("oauth_nonce".into(), nonce.into()),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), timestamp.to_string()),
        ("oauth_token".into(), keys.token.into()),
        ("oauth_version".into(), "1.0".into()),
    ]
}

/// The `Authorization: OAuth …` header of a request to `url` (its query is signed too;
/// a JSON body is not, §3.4.1.3).
pub fn authorization(
    keys: Keys<'_>,
    method: &str,
    url: &str,
    nonce: &str,
    timestamp: u64,
) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut oauth = protocol_params(keys, nonce, timestamp);
    let mut params = query_params(query);
    params.extend(oauth.iter().cloned());
    let sig = signature(keys, method, base, &params);
    oauth.push(("oauth_signature".into(), sig));
    let fields = oauth
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("OAuth {fields}")
}

/// Decoded `k=v` pairs of a query string (`+` is a space, as forms write it).
pub fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding (invalid escapes are kept as written).
pub fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parameters of an `Authorization: OAuth k="v", …` header, decoded; `None` when the
/// header is not an OAuth one.
pub fn parse_authorization(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim();
    let rest = rest
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("oauth "))
        .map(|_| &rest[6..])?;
    rest.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (k, v) = f.split_once('=')?;
            let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((decode(k.trim()), decode(v)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Twitter's "Creating a signature" guide, a reference test vector for
    /// RFC 5849 HMAC-SHA1 (form body parameters signed along with the query).
    #[test]
    fn published_example_signature() {
        let keys = Keys {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog",
            consumer_secret: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            token: "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
            token_secret: "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
        };
        let mut params = protocol_params(
            keys,
            "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
            1318622958,
        );
        params.push(("include_entities".into(), "true".into()));
        params.push((
            "status".into(),
            "Hello Ladies + Gentlemen, a signed OAuth request!".into(),
        ));
        assert_eq!(
            signature(
                keys,
                "POST",
                "https://api.twitter.com/1.1/statuses/update.json",
                &params
            ),
            "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
        );
    }

    #[test]
    fn header_round_trip() {
        let keys = Keys {
            consumer_key: "k y",
            consumer_secret: "s",
            token: "t",
            token_secret: "ts",
        };
        let h = authorization(keys, "post", "http://h:1/p?offset=0&limit=100", "n", 7);
        let p = parse_authorization(&h).expect("parsed");
        assert!(p.contains(&("oauth_consumer_key".into(), "k y".into())));
        let sig = p
            .iter()
            .find(|(k, _)| k == "oauth_signature")
            .map(|(_, v)| v.clone());
        let mut signed: Vec<(String, String)> = p
            .into_iter()
            .filter(|(k, _)| k != "oauth_signature")
            .collect();
        signed.extend(query_params("offset=0&limit=100"));
        assert_eq!(sig, Some(signature(keys, "POST", "http://h:1/p", &signed)));
        assert_eq!(decode("a%2Bb+c%zz"), "a+b c%zz");
    }
}
