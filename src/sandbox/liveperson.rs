//! The LivePerson Connector API fake: CSDS, Sentinel (AppJWT), IdP (ConsumerJWS),
//! CONVERSATION and SEND, plus the webhook bodies it emits (`ms.MessagingEventNotification`,
//! `cqm.ExConversationChangeNotification`), and the Messaging Interactions API's consumer
//! search (OAuth 1.0a brand keys, signature verified; with a configurable indexing lag).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::control::AgentAction;
use super::files;
use super::model::{
    AgentView, CloseReason, ConversationStatus, JoinRequest, Provider, SecondConversation,
};
use super::signing::sign_hs256_with_kid;
use super::state::{AppState, Conv, Inner, LpConsumer, LpToken, StoredFile};
use super::util::{header_str, json, now_ms, now_s, parse_urlencoded};
use super::webhooks;

const SENTINEL_KEY: &[u8] = b"transbordo-sandbox-sentinel";
const IDP_KEY: &[u8] = b"transbordo-sandbox-idp";

/// The LivePerson routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/api/account/{account_id}/service/baseURI.json",
            get(csds_all),
        )
        .route(
            "/api/account/{account_id}/service/{service}/baseURI.json",
            get(csds_one),
        )
        .route("/sentinel/api/account/{account_id}/app/token", post(token))
        .route("/api/account/{account_id}/consumer", post(consumer))
        .route(
            "/api/account/{account_id}/messaging/consumer/conversation",
            post(conversation),
        )
        .route(
            "/api/account/{account_id}/messaging/consumer/conversation/send",
            post(send),
        )
        .route(
            "/messaging_history/api/account/{account_id}/conversations/consumer/search",
            post(consumer_search),
        )
}

/// The Messaging Interactions error body.
fn mi_error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        json!({"error": status.canonical_reason().unwrap_or(""), "message": message}),
    )
}

/// Checks `Authorization: OAuth …` (RFC 5849 HMAC-SHA1) against the configured brand key.
fn verify_oauth(
    st: &AppState,
    headers: &HeaderMap,
    path: &str,
    query: &str,
) -> Result<(), Response> {
    use crate::providers::oauth1;
    let deny = |m: &str| Err(mi_error(StatusCode::UNAUTHORIZED, m));
    let Some(params) = header_str(headers, "authorization").and_then(oauth1::parse_authorization)
    else {
        return deny("OAuth 1.0a Authorization header is missing or malformed");
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let keys = &st.cfg.liveperson.interactions;
    if get("oauth_signature_method") != Some("HMAC-SHA1") {
        return deny("oauth_signature_method must be HMAC-SHA1");
    }
    if get("oauth_consumer_key") != Some(keys.app_key.as_str())
        || get("oauth_token") != Some(keys.access_token.as_str())
    {
        return deny("unknown app key or access token");
    }
    let Some(sig) = get("oauth_signature") else {
        return deny("oauth_signature is missing");
    };
    let mut signed: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "oauth_signature" && k != "realm")
        .cloned()
        .collect();
    signed.extend(oauth1::query_params(query));
    let host = header_str(headers, "host").unwrap_or(&st.host_port);
    let want = oauth1::signature(
        oauth1::Keys {
            consumer_key: &keys.app_key,
            consumer_secret: &keys.app_secret,
            token: &keys.access_token,
            token_secret: &keys.access_token_secret,
        },
        "POST",
        &format!("http://{host}{path}"),
        &signed,
    );
    if want != sig {
        return deny("invalid OAuth signature");
    }
    Ok(())
}

/// `POST …/conversations/consumer/search`: the consumer's conversations in the asked
/// statuses, newest first, leaving out those younger than the lag.
async fn consumer_search(
    State(st): State<Arc<AppState>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if account != st.cfg.liveperson.account_id {
        return unknown_account(&account);
    }
    let path = format!("/messaging_history/api/account/{account}/conversations/consumer/search");
    let query = query.unwrap_or_default();
    if let Err(r) = verify_oauth(&st, &headers, &path, &query) {
        return r;
    }
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(consumer) = v
        .get("consumer")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    else {
        return mi_error(StatusCode::BAD_REQUEST, "Missing parameter: consumer");
    };
    let statuses: Vec<&str> = match v.get("status") {
        None => vec!["OPEN", "CLOSE"],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(_) => return mi_error(StatusCode::BAD_REQUEST, "status must be an array"),
    };
    let q: std::collections::HashMap<String, String> =
        crate::providers::oauth1::query_params(&query)
            .into_iter()
            .collect();
    let offset = q
        .get("offset")
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = q
        .get("limit")
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(50)
        .min(100);
    let inner = st.lock();
    let newest = now_ms().saturating_sub(inner.lp.search_lag_ms);
    let mut found: Vec<&Conv> = inner
        .convs
        .values()
        .filter(|c| {
            c.view.provider == Provider::Liveperson
                && c.view.consumer_id.as_deref() == Some(consumer)
                && c.view.created_at_ms <= newest
                && statuses.contains(&if c.is_closed() { "CLOSE" } else { "OPEN" })
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.view.created_at_ms));
    let count = found.len();
    let records: Vec<Value> = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| {
            json!({"info": {"conversationId": c.view.id, "brandId": account,
                "status": if c.is_closed() { "CLOSE" } else { "OPEN" },
                "startTimeL": c.view.created_at_ms, "latestSkillId": c.view.skill_id},
              "consumerParticipants": [{"participantId": consumer}]})
        })
        .collect();
    json(
        StatusCode::OK,
        json!({"_metadata": {"count": count}, "conversationHistoryRecords": records}),
    )
}

/// The LivePerson error envelope.
fn lp_error(status: StatusCode, error_code: u32, title: &str, details: &str) -> Response {
    json(
        status,
        json!({"kind":"resp","code":status.as_u16(),"body":{"title":title,"details":details,"errorCode":error_code},"type":".ReqBody$ErrorResp"}),
    )
}

fn bad_request(details: &str) -> Response {
    lp_error(StatusCode::BAD_REQUEST, 40001, "Bad Request", details)
}

fn unauthorized(code: u32, details: &str) -> Response {
    lp_error(StatusCode::UNAUTHORIZED, code, "Unauthorized", details)
}

const SERVICES: &[&str] = &[
    "sentinel",
    "idp",
    "asyncMessagingEnt",
    "messagingRestApiDomain",
    "swift",
    "msgHist",
];

fn unknown_account(account: &str) -> Response {
    json(
        StatusCode::NOT_FOUND,
        json!({"error":"Not Found","message":format!("account {account} is not known to this sandbox")}),
    )
}

async fn csds_all(State(st): State<Arc<AppState>>, Path(account): Path<String>) -> Response {
    if account != st.cfg.liveperson.account_id {
        return unknown_account(&account);
    }
    let uris: Vec<Value> = SERVICES
        .iter()
        .map(|s| json!({"service": s, "account": account, "baseURI": st.host_port}))
        .collect();
    json(StatusCode::OK, json!({ "baseURIs": uris }))
}

async fn csds_one(
    State(st): State<Arc<AppState>>,
    Path((account, service)): Path<(String, String)>,
) -> Response {
    if account != st.cfg.liveperson.account_id {
        return unknown_account(&account);
    }
    if !SERVICES.contains(&service.as_str()) {
        return json(
            StatusCode::NOT_FOUND,
            json!({"error":"Not Found","message":format!("service {service} not found")}),
        );
    }
    json(
        StatusCode::OK,
        json!({"service": service, "account": account, "baseURI": st.host_port}),
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json(
        status,
        json!({"error": error, "error_description": description}),
    )
}

async fn token(
    State(st): State<Arc<AppState>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut params = parse_urlencoded(query.as_deref().unwrap_or(""));
    // Credentials may sit in the form body or in the query; the body wins.
    params.extend(parse_urlencoded(&String::from_utf8_lossy(&body)));
    if params.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let (Some(id), Some(secret)) = (params.get("client_id"), params.get("client_secret")) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id and client_secret are required",
        );
    };
    let cfg = &st.cfg.liveperson;
    let known = cfg
        .apps
        .iter()
        .any(|a| &a.client_id == id && &a.client_secret == secret);
    if !known || account != cfg.account_id {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    let now = now_s();
    let mut inner = st.lock();
    let ttl = inner.lp.token_ttl_s;
    let exp = now + ttl;
    let claims = json!({"aud": account, "azp": id, "scope": "msg.consumer", "iss": "Sentinel",
        "iat": now, "exp": exp, "jti": uuid::Uuid::new_v4().to_string()});
    let tok = sign_hs256_with_kid(SENTINEL_KEY, Some("appjwt-sandbox"), &claims);
    inner.lp.tokens.insert(
        tok.clone(),
        LpToken {
            client_id: id.clone(),
            account: account.clone(),
            exp,
        },
    );
    json(
        StatusCode::OK,
        json!({"access_token": tok, "token_type": "Bearer", "expires_in": ttl}),
    )
}

fn strip_bearer(v: &str) -> &str {
    let v = v.trim();
    match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
        _ => v,
    }
}

/// Checks `Authorization: <AppJWT>`; returns the app's client_id.
fn app_jwt(inner: &Inner, headers: &HeaderMap, account: &str) -> Result<String, Response> {
    let raw = header_str(headers, "authorization")
        .map(strip_bearer)
        .unwrap_or("");
    if raw.is_empty() {
        return Err(unauthorized(40105, "AppJWT is missing"));
    }
    let Some(t) = inner.lp.tokens.get(raw) else {
        return Err(unauthorized(40102, "AppJWT is invalid"));
    };
    if t.exp <= now_s() {
        return Err(unauthorized(40102, "AppJWT is expired"));
    }
    if t.account != account {
        return Err(unauthorized(40102, "AppJWT is not valid for this account"));
    }
    Ok(t.client_id.clone())
}

/// Checks both Send API headers; returns (client_id, lp_consumer_id).
fn send_auth(
    inner: &Inner,
    headers: &HeaderMap,
    account: &str,
) -> Result<(String, String), Response> {
    let client = app_jwt(inner, headers, account)?;
    let raw = header_str(headers, "x-lp-on-behalf")
        .map(strip_bearer)
        .unwrap_or("");
    if raw.is_empty() {
        return Err(unauthorized(40104, "ConsumerJWS is missing"));
    }
    match inner.lp.by_jws.get(raw) {
        Some(c) => Ok((client, c.clone())),
        None => Err(unauthorized(40103, "ConsumerJWS is invalid")),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(&format!("Malformed JSON: {e}")))
}

async fn consumer(
    State(st): State<Arc<AppState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = st.lock();
    if let Err(r) = app_jwt(&inner, &headers, &account) {
        return r;
    }
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(ext) = v
        .get("ext_consumer_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return bad_request("Missing parameter: ext_consumer_id");
    };
    let jws = match inner.lp.consumers.get(ext) {
        Some(c) => c.jws.clone(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            let claims = json!({"lp_consumer_id": id, "ext_consumer_id": ext, "account_id": account,
                "iss": "https://idp.liveperson.net", "iat": now_s()});
            let jws = sign_hs256_with_kid(IDP_KEY, Some("idp-sandbox"), &claims);
            inner.lp.by_jws.insert(jws.clone(), id);
            inner
                .lp
                .consumers
                .insert(ext.to_string(), LpConsumer { jws: jws.clone() });
            jws
        }
    };
    json(StatusCode::CREATED, json!({ "token": jws }))
}

fn req_type(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

fn req_id(v: &Value) -> Value {
    v.get("id").cloned().unwrap_or(Value::Null)
}

async fn conversation(
    State(st): State<Arc<AppState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = st.lock();
    let (client_id, consumer_id) = match send_auth(&inner, &headers, &account) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(reqs) = v.as_array() else {
        return bad_request("The body must be an array of requests");
    };
    if reqs.len() != 2 {
        return bad_request("Expected exactly two requests: userprofile.SetUserProfile, cm.ConsumerRequestConversation");
    }
    if req_type(&reqs[0]) != "userprofile.SetUserProfile" {
        return bad_request("The first request must be userprofile.SetUserProfile");
    }
    if req_type(&reqs[1]) != "cm.ConsumerRequestConversation" {
        return bad_request("The second request must be cm.ConsumerRequestConversation");
    }
    let crc = reqs[1].get("body").cloned().unwrap_or(Value::Null);
    let Some(brand) = crc
        .get("brandId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return bad_request("Missing parameter: brandId");
    };
    if brand != account {
        return bad_request("brandId does not match the account");
    }
    let profile_ok = json!({"code":"OK","body":{"msg":"OK User Profile set successfully"},"reqId":req_id(&reqs[0])});
    let open = inner.convs.values().find(|c| {
        c.view.provider == Provider::Liveperson
            && c.view.consumer_id.as_deref() == Some(consumer_id.as_str())
            && !c.is_closed()
    });
    match (open, inner.lp.second_conversation) {
        (None, _) | (Some(_), SecondConversation::Grant) => {}
        (Some(open), SecondConversation::RefuseNamed) => {
            return json(
                StatusCode::BAD_REQUEST,
                json!([profile_ok, {"code":"400","body":{"msg":"Consumer already has an open conversation","conversationId":open.view.id},"reqId":req_id(&reqs[1])}]),
            );
        }
        (Some(_), SecondConversation::RefuseUnnamed) => {
            return json(
                StatusCode::BAD_REQUEST,
                json!([profile_ok, {"code":"400","body":{"msg":"Consumer already has an open conversation"},"reqId":req_id(&reqs[1])}]),
            );
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let skill = match crc.get("skillId") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let details = json!({"request": crc, "userProfile": reqs[0].get("body").cloned().unwrap_or(json!({})), "clientId": client_id});
    let mut conv = Conv::new(Provider::Liveperson, id.clone(), details);
    conv.view.consumer_id = Some(consumer_id);
    conv.view.skill_id = skill;
    conv.lp_client_id = Some(client_id.clone());
    let body = conversation_change(&conv, &account);
    inner.convs.insert(id.clone(), conv);
    let note = inner.push_note(
        Provider::Liveperson,
        &id,
        "lp.conversation_change",
        body,
        Some(client_id),
    );
    drop(inner);
    webhooks::spawn(st.clone(), vec![note]);
    json(
        StatusCode::OK,
        json!([profile_ok, {"code":"OK","body":{"conversationId":id},"reqId":req_id(&reqs[1])}]),
    )
}

/// Finds an LP conversation owned by `consumer`.
fn owned<'a>(inner: &'a mut Inner, id: &str, consumer: &str) -> Result<&'a mut Conv, Response> {
    match inner.convs.get_mut(id) {
        Some(c) if c.view.provider == Provider::Liveperson => {
            if c.view.consumer_id.as_deref() != Some(consumer) {
                Err(unauthorized(
                    40103,
                    "ConsumerJWS is not valid for this conversation",
                ))
            } else {
                Ok(c)
            }
        }
        _ => Err(bad_request(&format!("Unknown conversation {id}"))),
    }
}

fn ok(id: Value, body: Value) -> Response {
    json(
        StatusCode::OK,
        json!({"reqId": id, "code": "OK", "body": body}),
    )
}

async fn send(
    State(st): State<Arc<AppState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = st.lock();
    let (client_id, consumer_id) = match send_auth(&inner, &headers, &account) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if v.is_array() {
        return bad_request("SEND takes one request per call, not an array");
    }
    let id = req_id(&v);
    let b = v.get("body").cloned().unwrap_or(Value::Null);
    let echo = st.cfg.liveperson.consumer_echo;
    match req_type(&v) {
        "ms.PublishEvent" => {
            let Some(dialog) = b
                .get("dialogId")
                .or_else(|| b.get("conversationId"))
                .and_then(Value::as_str)
            else {
                return bad_request("Missing parameter: dialogId");
            };
            let conv = match owned(&mut inner, dialog, &consumer_id) {
                Ok(c) => c,
                Err(r) => return r,
            };
            if conv.is_closed() {
                return bad_request("The conversation is closed");
            }
            let ev = b.get("event").cloned().unwrap_or(Value::Null);
            let hosted = ev.get("type").and_then(Value::as_str) == Some("ContentEvent")
                && ev.get("contentType").and_then(Value::as_str) == Some("hosted/file");
            let text = match ev.get("type").and_then(Value::as_str) {
                Some("ContentEvent") if hosted => {
                    let Some(path) = ev.pointer("/message/relativePath").and_then(Value::as_str)
                    else {
                        return bad_request("Missing parameter: event.message.relativePath");
                    };
                    if ev
                        .pointer("/message/fileType")
                        .and_then(Value::as_str)
                        .is_none()
                    {
                        return bad_request("Missing parameter: event.message.fileType");
                    }
                    // Only a file that was uploaded (and to this account) can be shared.
                    let Some(mut f) = inner
                        .files
                        .get(path)
                        .filter(|f| !f.bytes.is_empty())
                        .cloned()
                    else {
                        return bad_request("The file was not uploaded (relativePath unknown)");
                    };
                    if let Some(c) = ev
                        .pointer("/message/caption")
                        .and_then(Value::as_str)
                        .filter(|c| !c.is_empty())
                    {
                        f.name = c.to_string();
                    }
                    let Ok(conv) = owned(&mut inner, dialog, &consumer_id) else {
                        return bad_request("Unknown dialogId");
                    };
                    conv.add_file("consumer", &f, path);
                    None
                }
                Some("ContentEvent") => match ev.get("message") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) if !other.is_null() => Some(other.to_string()),
                    _ => return bad_request("Missing parameter: event.message"),
                },
                Some("RichContentEvent") => Some("[rich content]".to_string()),
                Some("ChatStateEvent") if ev.get("chatState").is_some() => {
                    let composing =
                        ev.get("chatState").and_then(Value::as_str) == Some("COMPOSING");
                    if let Ok(conv) = owned(&mut inner, dialog, &consumer_id) {
                        conv.set_typing("consumer", composing);
                    }
                    None
                }
                Some("AcceptStatusEvent") if ev.get("status").is_some() => None,
                _ => return bad_request("Unsupported or incomplete event"),
            };
            let conv = match owned(&mut inner, dialog, &consumer_id) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let seq = conv.seq;
            conv.seq += 1;
            let mut notes = Vec::new();
            if let Some(t) = text {
                conv.say("consumer", &t);
                if echo {
                    let consumer = consumer_id.clone();
                    let body = message_event(conv, seq, &consumer, "CONSUMER", &ev);
                    let cid = conv.view.id.clone();
                    notes.push(inner.push_note(
                        Provider::Liveperson,
                        &cid,
                        "lp.message",
                        body,
                        Some(client_id),
                    ));
                }
            }
            drop(inner);
            webhooks::spawn(st.clone(), notes);
            ok(id, json!({ "sequence": seq }))
        }
        "cm.UpdateConversationField" => {
            let Some(cid) = b.get("conversationId").and_then(Value::as_str) else {
                return bad_request("Missing parameter: conversationId");
            };
            let fields: Vec<Value> = match b.get("conversationField") {
                Some(Value::Array(a)) => a.clone(),
                Some(o @ Value::Object(_)) => vec![o.clone()],
                _ => return bad_request("Missing parameter: conversationField"),
            };
            let conv = match owned(&mut inner, cid, &consumer_id) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let closing = fields.iter().any(|f| {
                f.get("field").and_then(Value::as_str) == Some("ConversationStateField")
                    && f.get("conversationState").and_then(Value::as_str) == Some("CLOSE")
            });
            let mut notes = Vec::new();
            if closing && !conv.is_closed() {
                conv.view.status = ConversationStatus::Closed;
                conv.view.close_reason = Some(CloseReason::User);
                conv.view.updated_at_ms = now_ms();
                let body = conversation_change(conv, &account);
                let cid = conv.view.id.clone();
                let client = conv.lp_client_id.clone();
                notes.push(inner.push_note(
                    Provider::Liveperson,
                    &cid,
                    "lp.conversation_change",
                    body,
                    client,
                ));
            }
            drop(inner);
            webhooks::spawn(st.clone(), notes);
            ok(id, json!({"msg": "OK"}))
        }
        "userprofile.SetUserProfile" => ok(id, json!({"msg": "OK User Profile set successfully"})),
        "ms.GenerateURLForUploadFile" => {
            let size = match b.get("fileSize") {
                Some(Value::String(s)) => s.parse::<u64>().ok(),
                Some(Value::Number(n)) => n.as_u64(),
                _ => None,
            };
            let Some(size) = size else {
                return bad_request("Missing parameter: fileSize");
            };
            let ext = match b.get("fileType").and_then(Value::as_str) {
                Some(t @ ("JPG" | "JPEG" | "PNG" | "GIF")) => t.to_string(),
                Some(other) => {
                    return bad_request(&format!(
                        "fileType `{other}` is not one of JPG, JPEG, PNG, GIF"
                    ))
                }
                None => return bad_request("Missing parameter: fileType"),
            };
            if size > files::LP_MAX_BYTES {
                return bad_request("The file is over-sized (at most 3 MB)");
            }
            let path = format!(
                "{}/{account}/{}.{ext}",
                files::LP_PREFIX,
                uuid::Uuid::new_v4().simple()
            );
            inner.files.insert(
                path.clone(),
                StoredFile {
                    name: format!("upload.{}", ext.to_ascii_lowercase()),
                    content_type: String::new(),
                    bytes: Vec::new(),
                    declared: Some(size),
                    at_s: now_s(),
                },
            );
            ok(id, files::temp_url_body("PUT", &path))
        }
        "ms.GenerateURLForDownloadFile" => {
            let Some(path) = b.get("relativePath").and_then(Value::as_str) else {
                return bad_request("Missing parameter: relativePath");
            };
            if inner.files.get(path).is_none_or(|f| f.bytes.is_empty()) {
                return bad_request("Unknown relativePath");
            }
            ok(id, files::temp_url_body("GET", path))
        }
        other => bad_request(&format!("Unsupported request type `{other}`")),
    }
}

fn close_reason_name(r: CloseReason) -> &'static str {
    match r {
        CloseReason::Agent => "AGENT",
        CloseReason::User => "CONSUMER",
        CloseReason::System => "SYSTEM",
    }
}

/// `cqm.ExConversationChangeNotification` for the conversation as it is now.
pub(crate) fn conversation_change(conv: &Conv, account: &str) -> Value {
    let v = &conv.view;
    let consumer = v.consumer_id.clone().unwrap_or_default();
    let closed = v.status == ConversationStatus::Closed;
    let state = if closed { "CLOSE" } else { "OPEN" };
    let mut participants = Vec::new();
    if let Some(a) = &v.agent {
        participants.push(json!({"id": a.id, "role": "ASSIGNED_AGENT"}));
    }
    participants.push(json!({"id": consumer, "role": "CONSUMER"}));
    let skill = v.skill_id.clone().unwrap_or_else(|| "-1".into());
    let ttr = v
        .details
        .pointer("/request/ttrDefName")
        .and_then(Value::as_str)
        .unwrap_or("NORMAL");
    let mut dialog = json!({"dialogId": v.id, "dialogType": "MAIN", "channelType": "MESSAGING",
        "state": state, "creationTs": v.created_at_ms, "participantsDetails": participants});
    let mut details = json!({"skillId": skill, "brandId": account, "participants": participants,
        "dialogs": [], "state": state, "stage": state, "startTs": v.created_at_ms,
        "metaDataLastUpdateTs": v.updated_at_ms, "ttr": {"ttrType": ttr, "value": 3600}});
    if v.agent.is_some() {
        details["conversationHandlerDetails"] = json!({"accountId": account, "skillId": skill});
    }
    if closed {
        let reason = close_reason_name(v.close_reason.unwrap_or(CloseReason::System));
        dialog["endTs"] = json!(v.updated_at_ms);
        dialog["closedBy"] = json!(reason);
        details["closeReason"] = json!(reason);
        if reason == "AGENT" {
            details["closeReasonDescription"] = json!("MANUAL_CLOSE");
        }
        details["endTs"] = json!(v.updated_at_ms);
    }
    details["dialogs"] = json!([dialog]);
    json!({"kind": "notification", "type": "cqm.ExConversationChangeNotification",
        "body": {"changes": [{"type": "UPSERT", "result": {"convId": v.id, "effectiveTTR": -1,
            "conversationDetails": details}}]}})
}

/// `ms.MessagingEventNotification` carrying one event.
pub(crate) fn message_event(
    conv: &Conv,
    seq: u64,
    originator: &str,
    role: &str,
    event: &Value,
) -> Value {
    json!({"kind": "notification", "type": "ms.MessagingEventNotification",
        "body": {"changes": [{"sequence": seq, "originatorId": originator,
            "originatorMetadata": {"id": originator, "role": role},
            "serverTimestamp": now_ms(), "dialogId": conv.view.id, "conversationId": conv.view.id,
            "event": event}]}})
}

/// Makes up the agent for a join.
pub(crate) fn new_agent(st: &AppState, inner: &mut Inner, req: &JoinRequest) -> AgentView {
    let id = req.agent_id.clone().unwrap_or_else(|| {
        let n = inner.lp.next_agent;
        inner.lp.next_agent += 1;
        format!("{}.{}", st.cfg.liveperson.account_id, 4_000_000 + n)
    });
    AgentView {
        id,
        name: req
            .agent_name
            .clone()
            .unwrap_or_else(|| "Sandbox Agent".into()),
    }
}

/// Notifications of an agent action (the common state is already updated).
pub(crate) fn notify(st: &AppState, inner: &mut Inner, id: &str, action: &AgentAction) -> Vec<u64> {
    let account = st.cfg.liveperson.account_id.clone();
    let Some(conv) = inner.convs.get_mut(id) else {
        return Vec::new();
    };
    let client = conv.lp_client_id.clone();
    let (kind, body) = match action {
        AgentAction::Join(_) | AgentAction::Close(_) => (
            "lp.conversation_change",
            conversation_change(conv, &account),
        ),
        AgentAction::Say(text) => {
            let seq = conv.seq;
            conv.seq += 1;
            let agent = conv
                .view
                .agent
                .as_ref()
                .map(|a| a.id.clone())
                .unwrap_or_default();
            let ev = json!({"type": "ContentEvent", "contentType": "text/plain", "message": text});
            (
                "lp.message",
                message_event(conv, seq, &agent, "ASSIGNED_AGENT", &ev),
            )
        }
        AgentAction::File { text, file } => {
            let seq = conv.seq;
            conv.seq += 1;
            let agent = conv
                .view
                .agent
                .as_ref()
                .map(|a| a.id.clone())
                .unwrap_or_default();
            let ext = files::lp_file_type(&file.content_type).unwrap_or("IMG");
            let path = format!(
                "{}/{account}/{}.{}",
                files::LP_PREFIX,
                uuid::Uuid::new_v4().simple(),
                ext
            );
            conv.add_file("agent", file, &path);
            let caption = if text.is_empty() { &file.name } else { text };
            let ev = json!({"type": "ContentEvent", "contentType": "hosted/file",
                "message": {"caption": caption, "relativePath": path, "fileType": ext}});
            let body = message_event(conv, seq, &agent, "ASSIGNED_AGENT", &ev);
            inner.files.insert(path, file.clone());
            ("lp.message", body)
        }
        AgentAction::Typing(typing) => {
            let agent = conv
                .view
                .agent
                .as_ref()
                .map(|a| a.id.clone())
                .unwrap_or_default();
            let state = if *typing { "COMPOSING" } else { "ACTIVE" };
            let ev = json!({"type": "ChatStateEvent", "chatState": state});
            // Chat state changes carry no sequence.
            let mut body = message_event(conv, 0, &agent, "ASSIGNED_AGENT", &ev);
            if let Some(c) = body.pointer_mut("/body/changes/0") {
                if let Some(o) = c.as_object_mut() {
                    o.remove("sequence");
                }
            }
            ("lp.chat_state", body)
        }
    };
    vec![inner.push_note(Provider::Liveperson, id, kind, body, client)]
}
