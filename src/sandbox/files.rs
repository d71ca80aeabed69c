//! Hosted files: LivePerson's storage (`swift`: temp URLs signed per method, path and
//! expiry, JPG/PNG/GIF up to 3 MB) and the plain downloads the Zendesk and ALTU fakes
//! hand out (`/sandbox-files/{id}/{name}`, like a Zendesk `content_url`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::state::{AppState, StoredFile};
use super::util::{json, now_s, parse_urlencoded};

const SWIFT_KEY: &[u8] = b"transbordo-sandbox-swift";

/// How long a LivePerson temp URL lives (LivePerson's default: 1 minute).
pub(crate) const TEMP_URL_TTL_S: u64 = 60;

/// LivePerson's hosted-file limit.
pub(crate) const LP_MAX_BYTES: u64 = 3 * 1024 * 1024;

/// The prefix of LivePerson storage paths.
pub(crate) const LP_PREFIX: &str = "/v1/AUTH_async-images";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/AUTH_async-images/{account}/{file}",
            get(swift_get).put(swift_put),
        )
        .route("/sandbox-files/{id}/{name}", get(plain_get))
}

/// The temp URL signature of `method` on `path` until `expires` (hex HMAC-SHA256, as
/// OpenStack Swift's `tempurl`).
pub(crate) fn sign(method: &str, path: &str, expires: u64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(SWIFT_KEY)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(format!("{method}\n{expires}\n{path}").as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `{"relativePath", "queryParams": {"temp_url_sig", "temp_url_expires"}}` for `method`.
pub(crate) fn temp_url_body(method: &str, path: &str) -> serde_json::Value {
    let exp = now_s() + TEMP_URL_TTL_S;
    json!({"relativePath": path, "queryParams": {
        "temp_url_sig": sign(method, path, exp), "temp_url_expires": exp.to_string()}})
}

fn swift_error(status: StatusCode, msg: &str) -> Response {
    (status, msg.to_string()).into_response()
}

/// The temp URL checks: signature for this method and path, not expired.
fn check_temp_url(method: &str, path: &str, q: Option<&str>) -> Result<(), Response> {
    let q = parse_urlencoded(q.unwrap_or(""));
    let (Some(sig), Some(exp)) = (q.get("temp_url_sig"), q.get("temp_url_expires")) else {
        return Err(swift_error(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: temp_url_sig and temp_url_expires are required",
        ));
    };
    let Ok(exp) = exp.parse::<u64>() else {
        return Err(swift_error(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: bad expiry",
        ));
    };
    if exp < now_s() {
        return Err(swift_error(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: temp URL expired",
        ));
    }
    if *sig != sign(method, path, exp) {
        return Err(swift_error(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: temp URL invalid",
        ));
    }
    Ok(())
}

async fn swift_put(
    State(st): State<Arc<AppState>>,
    Path((account, file)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("{LP_PREFIX}/{account}/{file}");
    if let Err(r) = check_temp_url("PUT", &path, q.as_deref()) {
        return r;
    }
    let mut inner = st.lock();
    let Some(slot) = inner.files.get_mut(&path) else {
        return swift_error(
            StatusCode::NOT_FOUND,
            "404 Not Found: no upload URL for this path",
        );
    };
    if body.len() as u64 > LP_MAX_BYTES {
        return swift_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 Request Entity Too Large: hosted files are at most 3 MB",
        );
    }
    if slot.declared.is_some_and(|d| d != body.len() as u64) {
        return swift_error(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: the body is not the fileSize asked for",
        );
    }
    slot.bytes = body.to_vec();
    if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) {
        slot.content_type = ct.to_string();
    }
    (StatusCode::CREATED, "").into_response()
}

async fn swift_get(
    State(st): State<Arc<AppState>>,
    Path((account, file)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("{LP_PREFIX}/{account}/{file}");
    if let Err(r) = check_temp_url("GET", &path, q.as_deref()) {
        return r;
    }
    serve(&st, &path)
}

async fn plain_get(
    State(st): State<Arc<AppState>>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    serve(&st, &plain_path(&id, &name))
}

fn serve(st: &AppState, path: &str) -> Response {
    let inner = st.lock();
    match inner.files.get(path) {
        Some(f) => {
            let mut r = f.bytes.clone().into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&f.content_type) {
                r.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
            }
            r
        }
        None => json(StatusCode::NOT_FOUND, json!({"error": "no such file"})),
    }
}

/// The path of a plainly served file.
pub(crate) fn plain_path(id: &str, name: &str) -> String {
    format!("/sandbox-files/{id}/{name}")
}

/// Stores a file served plainly; returns its path.
pub(crate) fn store_plain(inner: &mut super::state::Inner, f: StoredFile) -> String {
    let name: String = f
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = plain_path(&uuid::Uuid::new_v4().simple().to_string(), &name);
    inner.files.insert(path.clone(), f);
    path
}

/// A LivePerson `fileType` for a content type or name.
pub(crate) fn lp_file_type(content_type: &str) -> Option<&'static str> {
    match content_type {
        "image/jpeg" | "image/jpg" => Some("JPG"),
        "image/png" => Some("PNG"),
        "image/gif" => Some("GIF"),
        "application/pdf" => Some("PDF"),
        "text/plain" => Some("TXT"),
        _ => None,
    }
}
