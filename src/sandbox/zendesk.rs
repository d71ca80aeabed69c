//! The Zendesk Support API fake: users, tickets (with `Idempotency-Key`), and the
//! event-subscribed webhook bodies it emits (`zen:event-type:ticket.status_changed`,
//! `zen:event-type:ticket.comment_added`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::control::AgentAction;
use super::model::{AgentView, CloseReason, ConversationStatus, JoinRequest, Provider};
use super::state::{AppState, Conv, Idem, Inner};
use super::util::{
    header_str, json, now_ms, now_s, parse_urlencoded, rfc3339, set_header, strip_json,
};
use super::webhooks;

const STATUSES: &[&str] = &["new", "open", "pending", "hold", "solved", "closed"];
const IDEMPOTENCY_TTL_S: u64 = 2 * 3600;

/// The Zendesk routes (each with and without `.json`).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v2/users/create_or_update", post(create_or_update))
        .route(
            "/api/v2/users/create_or_update.json",
            post(create_or_update),
        )
        .route("/api/v2/users/{id}", get(get_user).put(put_user))
        .route("/api/v2/tickets", get(list_tickets).post(create_ticket))
        .route(
            "/api/v2/tickets.json",
            get(list_tickets).post(create_ticket),
        )
        .route("/api/v2/tickets/{id}", get(get_ticket).put(put_ticket))
        .route("/api/v2/tickets/{id}/comments", get(get_comments))
        .route("/api/v2/tickets/{id}/comments.json", get(get_comments))
        .route("/api/v2/uploads", post(upload))
        .route("/api/v2/uploads.json", post(upload))
}

/// An upload token lives 60 minutes unless a comment uses it.
const UPLOAD_TOKEN_TTL_S: u64 = 3600;

/// Zendesk's file limit: 50 MB.
const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

/// `POST /api/v2/uploads?filename=…[&token=…]`: the raw bytes; `201` with the token
/// (the same one when `token` names a live upload, so one comment takes several files).
async fn upload(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    let q = super::util::parse_urlencoded(q.as_deref().unwrap_or(""));
    let Some(filename) = q.get("filename").filter(|f| !f.trim().is_empty()).cloned() else {
        return bad_request("filename is required");
    };
    if body.len() > MAX_UPLOAD_BYTES {
        return json(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "RecordInvalid", "description": "File size exceeds the 50 MB limit"}),
        );
    }
    if body.is_empty() {
        return invalid("uploads", "The file is empty", "BlankValue");
    }
    let content_type = header_str(&headers, "content-type")
        .unwrap_or("application/binary")
        .to_string();
    let mut inner = st.lock();
    let now = now_s();
    let expired: Vec<String> = inner
        .zd_uploads
        .iter()
        .filter(|(_, paths)| {
            paths
                .first()
                .and_then(|p| inner.files.get(p))
                .is_some_and(|f| f.at_s + UPLOAD_TOKEN_TTL_S < now)
        })
        .map(|(t, _)| t.clone())
        .collect();
    for t in expired {
        inner.zd_uploads.remove(&t);
    }
    let token = match q.get("token") {
        Some(t) if inner.zd_uploads.contains_key(t) => t.clone(),
        Some(_) => return not_found(),
        None => uuid::Uuid::new_v4().simple().to_string()[..15].to_string(),
    };
    let file = super::state::StoredFile {
        name: filename.clone(),
        content_type: content_type.clone(),
        bytes: body.to_vec(),
        declared: None,
        at_s: now,
    };
    let size = file.bytes.len();
    let path = super::files::store_plain(&mut inner, file);
    inner
        .zd_uploads
        .entry(token.clone())
        .or_default()
        .push(path.clone());
    let attachment = json!({"id": inner.zd.next_comment, "file_name": filename,
        "content_url": format!("{}{path}", st.base_url), "content_type": content_type, "size": size});
    inner.zd.next_comment += 1;
    json(
        StatusCode::CREATED,
        json!({"upload": {"token": token, "attachment": attachment, "attachments": [attachment]}}),
    )
}

fn unauthorized() -> Response {
    json(
        StatusCode::UNAUTHORIZED,
        json!({"error": "Couldn't authenticate you"}),
    )
}

fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        json!({"error": "RecordNotFound", "description": "Not found"}),
    )
}

fn bad_request(description: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        json!({"error": "InvalidEndpoint", "description": description}),
    )
}

fn invalid(field: &str, description: &str, error: &str) -> Response {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": "RecordInvalid", "description": "Record validation errors",
            "details": {field: [{"description": description, "error": error}]}}),
    )
}

fn blank_comment() -> Response {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error":"RecordInvalid","description":"Record validation errors",
            "details":{"base":[{"description":"Description: cannot be blank","error":"BlankValue",
                "ticket_field_id":32972409,"ticket_field_type":"FieldDescription"}]}}),
    )
}

fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let cfg = &st.cfg.zendesk;
    let Some(h) = header_str(headers, "authorization") else {
        return Err(unauthorized());
    };
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h, ""));
    let ok = if scheme.eq_ignore_ascii_case("basic") {
        STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|s| s == format!("{}/token:{}", cfg.email, cfg.api_token))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        cfg.bearer_tokens.iter().any(|t| t == rest.trim())
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

fn parse_root(body: &[u8], root: &str) -> Result<Map<String, Value>, Response> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(&format!("Unable to parse JSON: {e}")))?;
    match v.get(root) {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(bad_request(&format!("Expected a `{root}` object"))),
    }
}

fn ts() -> String {
    rfc3339(now_s())
}

fn user_url(st: &AppState, id: u64) -> String {
    format!("{}/api/v2/users/{id}.json", st.base_url)
}

fn ticket_url(st: &AppState, id: u64) -> String {
    format!("{}/api/v2/tickets/{id}.json", st.base_url)
}

fn create_user(
    st: &AppState,
    inner: &mut Inner,
    name: &str,
    email: Option<&str>,
    role: &str,
) -> u64 {
    let id = inner.zd.next_user;
    inner.zd.next_user += 1;
    let now = ts();
    let user = json!({"id": id, "url": user_url(st, id), "name": name, "email": email,
        "external_id": null, "role": role, "active": true, "verified": false, "locale": "en-US",
        "phone": null, "tags": [], "user_fields": {}, "created_at": now, "updated_at": now});
    inner.zd.users.insert(id, user);
    id
}

/// The API user (the caller), created on first use.
fn api_user(st: &AppState, inner: &mut Inner) -> u64 {
    let email = st.cfg.zendesk.email.clone();
    let found = inner
        .zd
        .users
        .iter()
        .find(|(_, u)| u.get("email").and_then(Value::as_str) == Some(email.as_str()))
        .map(|(id, _)| *id);
    found.unwrap_or_else(|| create_user(st, inner, "Sandbox Bot", Some(&email), "admin"))
}

fn merge_user(user: &mut Value, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match k.as_str() {
            "id" | "url" | "created_at" | "updated_at" => {}
            "user_fields" => {
                if let (Some(dst), Value::Object(src)) = (
                    user.get_mut("user_fields").and_then(Value::as_object_mut),
                    v,
                ) {
                    for (fk, fv) in src {
                        dst.insert(fk.clone(), fv.clone());
                    }
                }
            }
            _ => user[k.as_str()] = v.clone(),
        }
    }
    user["updated_at"] = json!(ts());
}

fn find_user(inner: &Inner, patch: &Map<String, Value>) -> Option<u64> {
    let by = |key: &str, ci: bool| {
        let want = patch
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())?;
        inner
            .zd
            .users
            .iter()
            .find(|(_, u)| {
                u.get(key).and_then(Value::as_str).is_some_and(|have| {
                    if ci {
                        have.eq_ignore_ascii_case(want)
                    } else {
                        have == want
                    }
                })
            })
            .map(|(id, _)| *id)
    };
    by("external_id", false).or_else(|| by("email", true))
}

async fn create_or_update(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    let patch = match parse_root(&body, "user") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut inner = st.lock();
    let (status, id) = match find_user(&inner, &patch) {
        Some(id) => (StatusCode::OK, id),
        None => {
            let name = patch
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string();
            if name.is_empty() {
                return invalid(
                    "name",
                    "Name:  is too short (minimum is 1 character)",
                    "InvalidValue",
                );
            }
            (
                StatusCode::CREATED,
                create_user(&st, &mut inner, &name, None, "end-user"),
            )
        }
    };
    let Some(user) = inner.zd.users.get_mut(&id) else {
        return not_found();
    };
    merge_user(user, &patch);
    let mut r = json(status, json!({ "user": user }));
    set_header(&mut r, "location", &user_url(&st, id));
    r
}

async fn get_user(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    let inner = st.lock();
    match strip_json(&id)
        .parse::<u64>()
        .ok()
        .and_then(|i| inner.zd.users.get(&i))
    {
        Some(u) => json(StatusCode::OK, json!({ "user": u })),
        None => not_found(),
    }
}

async fn put_user(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    let patch = match parse_root(&body, "user") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut inner = st.lock();
    match strip_json(&id)
        .parse::<u64>()
        .ok()
        .and_then(|i| inner.zd.users.get_mut(&i))
    {
        Some(u) => {
            merge_user(u, &patch);
            json(StatusCode::OK, json!({ "user": u }))
        }
        None => not_found(),
    }
}

fn comment_text(c: &Value) -> Option<String> {
    c.get("body")
        .or_else(|| c.get("html_body"))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
}

/// Maps the ticket status onto the conversation view.
fn sync(conv: &mut Conv, ticket: Value) {
    let status = ticket
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("new")
        .to_string();
    conv.view.status = match status.as_str() {
        "new" => ConversationStatus::Waiting,
        "solved" | "closed" => ConversationStatus::Closed,
        _ => ConversationStatus::WithAgent,
    };
    if conv.view.status == ConversationStatus::Closed {
        conv.view.close_reason.get_or_insert(CloseReason::System);
    } else {
        conv.view.close_reason = None;
    }
    conv.view.external_id = ticket
        .get("external_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    conv.view.updated_at_ms = now_ms();
    conv.view.details = ticket;
}

fn add_comment(
    inner: &mut Inner,
    conv_id: &str,
    author: u64,
    text: &str,
    public: bool,
    role: &str,
) -> Option<Value> {
    let cid = inner.zd.next_comment;
    inner.zd.next_comment += 1;
    let c = json!({"id": cid, "type": "Comment", "author_id": author, "body": text,
        "html_body": format!("<div class=\"zd-comment\"><p>{text}</p></div>"), "public": public,
        "created_at": ts()});
    let conv = inner.convs.get_mut(conv_id)?;
    conv.comments.push(c.clone());
    conv.say(role, text);
    Some(c)
}

const COPIED: &[&str] = &[
    "subject",
    "type",
    "priority",
    "assignee_id",
    "group_id",
    "brand_id",
    "ticket_form_id",
    "external_id",
    "tags",
    "custom_fields",
    "organization_id",
    "due_at",
];

async fn create_ticket(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("Unable to parse JSON: {e}")),
    };
    let key = header_str(&headers, "idempotency-key").map(str::to_string);
    let mut inner = st.lock();
    if let Some(k) = &key {
        if k.is_empty() || k.len() > 255 {
            return bad_request("Idempotency-Key must be 1 to 255 characters");
        }
        let now = now_s();
        inner
            .zd
            .idem
            .retain(|_, e| now.saturating_sub(e.at_s) < IDEMPOTENCY_TTL_S);
        if let Some(e) = inner.zd.idem.get(k) {
            if e.request != request {
                let mut r = json(
                    StatusCode::BAD_REQUEST,
                    json!({"error":"IdempotentRequestError","description":"Request parameters don't match the given idempotency key"}),
                );
                set_header(&mut r, "x-idempotency-lookup", "hit");
                return r;
            }
            let mut r = json(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::CREATED),
                e.body.clone(),
            );
            set_header(&mut r, "location", &e.location);
            set_header(&mut r, "x-idempotency-lookup", "hit");
            return r;
        }
    }
    let Some(t) = request.get("ticket").and_then(Value::as_object) else {
        return bad_request("Expected a `ticket` object");
    };
    let comment = t.get("comment").cloned().unwrap_or(Value::Null);
    let Some(text) = comment_text(&comment) else {
        return blank_comment();
    };
    let status = match t.get("status") {
        None | Some(Value::Null) => "new".to_string(),
        Some(Value::String(s)) if STATUSES.contains(&s.as_str()) => s.clone(),
        Some(other) => {
            return invalid(
                "status",
                &format!("Status: {other} is not valid"),
                "InvalidValue",
            )
        }
    };
    let caller = api_user(&st, &mut inner);
    let requester = if let Some(r) = t.get("requester_id").filter(|v| !v.is_null()) {
        match r.as_u64().filter(|id| inner.zd.users.contains_key(id)) {
            Some(id) => id,
            None => return invalid("requester", "Requester: is invalid", "InvalidValue"),
        }
    } else if let Some(Value::Object(r)) = t.get("requester") {
        match find_user(&inner, r) {
            Some(id) => id,
            None => {
                let name = r
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if name.is_empty() {
                    return invalid(
                        "requester",
                        "Requester: Name:  is too short (minimum is 1 character)",
                        "InvalidValue",
                    );
                }
                let email = r.get("email").and_then(Value::as_str);
                let id = create_user(&st, &mut inner, &name, email, "end-user");
                if let (Some(u), Some(l)) = (inner.zd.users.get_mut(&id), r.get("locale_id")) {
                    u["locale_id"] = l.clone();
                }
                id
            }
        }
    } else {
        caller
    };
    let id = inner.zd.next_ticket;
    inner.zd.next_ticket += 1;
    let now = ts();
    let public = comment
        .get("public")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let author = comment
        .get("author_id")
        .and_then(Value::as_u64)
        .unwrap_or(caller);
    let mut ticket = json!({"id": id, "url": ticket_url(&st, id), "external_id": null, "type": null,
        "subject": null, "raw_subject": null, "description": text, "priority": null, "status": status,
        "recipient": null, "requester_id": requester, "submitter_id": caller, "assignee_id": null,
        "organization_id": null, "group_id": null, "collaborator_ids": [], "follower_ids": [],
        "email_cc_ids": [], "has_incidents": false, "is_public": public, "due_at": null, "tags": [],
        "custom_fields": [], "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": null}},
        "brand_id": null, "ticket_form_id": null, "allow_channelback": false, "allow_attachments": true,
        "from_messaging_channel": false, "created_at": now, "updated_at": now});
    for k in COPIED {
        if let Some(v) = t.get(*k) {
            ticket[*k] = v.clone();
        }
    }
    ticket["raw_subject"] = ticket["subject"].clone();
    ticket["fields"] = ticket["custom_fields"].clone();
    let sid = id.to_string();
    let mut conv = Conv::new(Provider::Zendesk, sid.clone(), Value::Null);
    conv.view.consumer_id = Some(requester.to_string());
    conv.view.skill_id = t
        .get("group_id")
        .filter(|v| !v.is_null())
        .map(|v| v.to_string());
    sync(&mut conv, ticket.clone());
    inner.convs.insert(sid.clone(), conv);
    let role = if author == requester {
        "consumer"
    } else {
        "bot"
    };
    add_comment(&mut inner, &sid, author, &text, public, role);
    let location = ticket_url(&st, id);
    let answer = json!({ "ticket": ticket });
    if let Some(k) = key.clone() {
        inner.zd.idem.insert(
            k,
            Idem {
                request,
                status: 201,
                location: location.clone(),
                body: answer.clone(),
                at_s: now_s(),
            },
        );
    }
    let mut r = json(StatusCode::CREATED, answer);
    set_header(&mut r, "location", &location);
    if key.is_some() {
        set_header(&mut r, "x-idempotency-lookup", "miss");
    }
    r
}

/// The List Tickets endpoint's own limit (research 2026-12 §4a; 300 with High Volume).
const TICKETS_INDEX_PER_MINUTE: u32 = 100;

/// `GET /api/v2/tickets?external_id=…`: the tickets with that external id (not unique),
/// by id ascending, 100 a page (`page=N`). Its own limit of 100 requests a minute: over
/// it, `429` with `Retry-After`; every answer carries `Zendesk-RateLimit-tickets-index`.
async fn list_tickets(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    let now = now_s();
    let (minute, resets) = (now / 60, 60 - now % 60);
    let mut inner = st.lock();
    let used = {
        let w = &mut inner.zd.index_window;
        if w.0 != minute {
            *w = (minute, 0);
        }
        w.1 = w.1.saturating_add(1);
        w.1
    };
    let limit_header = |r: &mut Response, remaining: u32| {
        set_header(
            r,
            "zendesk-ratelimit-tickets-index",
            &format!("total={TICKETS_INDEX_PER_MINUTE}; remaining={remaining}; resets={resets}"),
        );
    };
    if used > TICKETS_INDEX_PER_MINUTE {
        let mut r = json(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "APIRateLimitExceeded",
                   "description": "Number of allowed API requests per minute exceeded"}),
        );
        set_header(&mut r, "retry-after", &resets.to_string());
        limit_header(&mut r, 0);
        return r;
    }
    let params = parse_urlencoded(query.as_deref().unwrap_or(""));
    let page: usize = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let wanted = params.get("external_id").cloned();
    let mut all: Vec<&Conv> = inner
        .convs
        .values()
        .filter(|c| c.view.provider == Provider::Zendesk)
        .filter(|c| match &wanted {
            Some(w) => c.view.details.get("external_id").and_then(Value::as_str) == Some(w),
            None => true,
        })
        .collect();
    all.sort_by_key(|c| c.view.id.parse::<u64>().unwrap_or(u64::MAX));
    let count = all.len();
    let tickets: Vec<Value> = all
        .iter()
        .skip((page - 1) * 100)
        .take(100)
        .map(|c| c.view.details.clone())
        .collect();
    let link = |p: usize| {
        let mut q = format!("page={p}");
        if let Some(w) = &wanted {
            q.push_str("&external_id=");
            q.push_str(
                &w.replace('%', "%25")
                    .replace('&', "%26")
                    .replace(' ', "%20"),
            );
        }
        json!(format!("{}/api/v2/tickets.json?{q}", st.base_url))
    };
    let next = if page * 100 < count {
        link(page + 1)
    } else {
        Value::Null
    };
    let prev = if page > 1 {
        link(page - 1)
    } else {
        Value::Null
    };
    drop(inner);
    let mut r = json(
        StatusCode::OK,
        json!({"tickets": tickets, "next_page": next, "previous_page": prev, "count": count}),
    );
    limit_header(&mut r, TICKETS_INDEX_PER_MINUTE - used);
    r
}

fn ticket_of<'a>(inner: &'a Inner, id: &str) -> Option<&'a Conv> {
    inner
        .convs
        .get(strip_json(id))
        .filter(|c| c.view.provider == Provider::Zendesk)
}

async fn get_ticket(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    match ticket_of(&st.lock(), &id) {
        Some(c) => json(StatusCode::OK, json!({ "ticket": c.view.details })),
        None => not_found(),
    }
}

async fn get_comments(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    match ticket_of(&st.lock(), &id) {
        Some(c) => json(
            StatusCode::OK,
            json!({"comments": c.comments, "next_page": null, "previous_page": null, "count": c.comments.len()}),
        ),
        None => not_found(),
    }
}

async fn put_ticket(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&st, &headers) {
        return r;
    }
    let patch = match parse_root(&body, "ticket") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut inner = st.lock();
    let Some(conv) = ticket_of(&inner, &id) else {
        return not_found();
    };
    let sid = conv.view.id.clone();
    let mut ticket = conv.view.details.clone();
    let old = ticket["status"].as_str().unwrap_or("new").to_string();
    if old == "closed" {
        return invalid(
            "status",
            "Status: closed prevents ticket update",
            "ClosedPreventsUpdate",
        );
    }
    let new = match patch.get("status") {
        None | Some(Value::Null) => old.clone(),
        Some(Value::String(s)) if STATUSES.contains(&s.as_str()) => s.clone(),
        Some(other) => {
            return invalid(
                "status",
                &format!("Status: {other} is not valid"),
                "InvalidValue",
            )
        }
    };
    let comment = match patch.get("comment") {
        None | Some(Value::Null) => None,
        Some(c) => match comment_text(c) {
            Some(t) => Some((t, c.clone())),
            None => return blank_comment(),
        },
    };
    // `uploads`: tokens of live uploads, used once (an unknown or expired one is refused
    // before anything changes).
    let mut uploaded = Vec::new();
    if let Some((_, c)) = &comment {
        match c.get("uploads") {
            None | Some(Value::Null) => {}
            Some(Value::Array(tokens)) => {
                for t in tokens {
                    let live = t
                        .as_str()
                        .and_then(|t| inner.zd_uploads.get(t))
                        .filter(|paths| {
                            paths
                                .first()
                                .and_then(|p| inner.files.get(p))
                                .is_some_and(|f| f.at_s + UPLOAD_TOKEN_TTL_S >= now_s())
                        });
                    match live {
                        Some(paths) => uploaded.extend(paths.iter().cloned()),
                        None => {
                            return invalid(
                                "uploads",
                                &format!("Upload token {t} is unknown or expired"),
                                "InvalidValue",
                            )
                        }
                    }
                }
                for t in tokens.iter().filter_map(Value::as_str) {
                    inner.zd_uploads.remove(t);
                }
            }
            Some(_) => {
                return invalid(
                    "uploads",
                    "uploads must be a list of tokens",
                    "InvalidValue",
                )
            }
        }
    }
    for k in COPIED {
        if let Some(v) = patch.get(*k) {
            ticket[*k] = v.clone();
        }
    }
    ticket["status"] = json!(new);
    ticket["updated_at"] = json!(ts());
    let caller = api_user(&st, &mut inner);
    if let Some((text, c)) = comment {
        let author = c.get("author_id").and_then(Value::as_u64).unwrap_or(caller);
        let public = c.get("public").and_then(Value::as_bool).unwrap_or(true);
        let role = if Some(author) == ticket["requester_id"].as_u64() {
            "consumer"
        } else {
            "bot"
        };
        add_comment(&mut inner, &sid, author, &text, public, role);
        for path in &uploaded {
            let Some(f) = inner.files.get(path).cloned() else {
                continue;
            };
            let url = format!("{}{path}", st.base_url);
            if let Some(conv) = inner.convs.get_mut(&sid) {
                conv.add_file(role, &f, &url);
            }
        }
    }
    let mut notes = Vec::new();
    if let Some(conv) = inner.convs.get_mut(&sid) {
        sync(conv, ticket.clone());
    }
    if new != old {
        let body = status_changed(&st, &ticket, &old, &new, caller);
        notes.push(inner.push_note(
            Provider::Zendesk,
            &sid,
            "zendesk.status_changed",
            body,
            None,
        ));
    }
    drop(inner);
    webhooks::spawn(st.clone(), notes);
    json(StatusCode::OK, json!({ "ticket": ticket }))
}

fn id_str(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}

fn envelope(st: &AppState, ticket: &Value, typ: &str, actor: u64, event: Value) -> Value {
    let t = ticket;
    let detail = json!({"actor_id": actor.to_string(), "assignee_id": id_str(&t["assignee_id"]),
        "brand_id": id_str(&t["brand_id"]), "created_at": t["created_at"], "custom_status": null,
        "description": t["description"], "external_id": t["external_id"], "form_id": id_str(&t["ticket_form_id"]),
        "group_id": id_str(&t["group_id"]), "id": id_str(&t["id"]), "is_public": t["is_public"],
        "organization_id": id_str(&t["organization_id"]), "priority": t["priority"].as_str().map(str::to_uppercase),
        "requester_id": id_str(&t["requester_id"]), "status": t["status"].as_str().map(str::to_uppercase),
        "subject": t["subject"], "submitter_id": id_str(&t["submitter_id"]), "tags": t["tags"],
        "type": t["type"].as_str().map(str::to_uppercase), "updated_at": t["updated_at"], "via": {"channel": "api"}});
    json!({"type": format!("zen:event-type:{typ}"), "account_id": st.cfg.zendesk.account_id,
        "id": uuid::Uuid::new_v4().to_string(), "subject": format!("zen:ticket:{}", t["id"]),
        "time": ts(), "zendesk_event_version": "2022-11-06", "detail": detail, "event": event})
}

/// `zen:event-type:ticket.status_changed`.
fn status_changed(st: &AppState, ticket: &Value, old: &str, new: &str, actor: u64) -> Value {
    envelope(
        st,
        ticket,
        "ticket.status_changed",
        actor,
        json!({"previous": old.to_uppercase(), "current": new.to_uppercase()}),
    )
}

/// Makes up (or finds) the agent user for a join.
pub(crate) fn new_agent(inner: &mut Inner, req: &JoinRequest) -> AgentView {
    let name = req
        .agent_name
        .clone()
        .unwrap_or_else(|| "Sandbox Agent".into());
    let existing = req
        .agent_id
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|id| inner.zd.users.contains_key(id));
    let id = match existing {
        Some(id) => id,
        None => {
            let id = inner.zd.next_user;
            inner.zd.next_user += 1;
            let now = ts();
            inner.zd.users.insert(
                id,
                json!({"id": id, "name": name, "email": format!("agent{id}@example.com"), "role": "agent",
                    "active": true, "user_fields": {}, "created_at": now, "updated_at": now}),
            );
            id
        }
    };
    AgentView {
        id: id.to_string(),
        name,
    }
}

/// Ticket changes and notifications of an agent action.
pub(crate) fn notify(st: &AppState, inner: &mut Inner, id: &str, action: &AgentAction) -> Vec<u64> {
    let Some(conv) = inner.convs.get(id) else {
        return Vec::new();
    };
    let agent = conv.view.agent.clone();
    let agent_id = agent
        .as_ref()
        .and_then(|a| a.id.parse::<u64>().ok())
        .unwrap_or(0);
    let mut ticket = conv.view.details.clone();
    let old = ticket["status"].as_str().unwrap_or("new").to_string();
    let reason = conv.view.close_reason;
    let new = match action {
        AgentAction::Join(_) => {
            ticket["assignee_id"] = json!(agent_id);
            if old == "new" {
                "open".to_string()
            } else {
                old.clone()
            }
        }
        AgentAction::Say(_) | AgentAction::File { .. } | AgentAction::Typing(_) => old.clone(),
        AgentAction::Close(CloseReason::Agent) => "solved".to_string(),
        AgentAction::Close(_) => "closed".to_string(),
    };
    ticket["status"] = json!(new);
    ticket["updated_at"] = json!(ts());
    let mut notes = Vec::new();
    if let AgentAction::File { text, file } = action {
        let path = super::files::store_plain(inner, file.clone());
        let url = format!("{}{path}", st.base_url);
        let cid = inner.zd.next_comment;
        inner.zd.next_comment += 1;
        let body_text = if text.is_empty() {
            file.name.clone()
        } else {
            text.clone()
        };
        let attachment = json!({"id": cid + 1_000_000, "file_name": file.name,
            "content_url": url, "content_type": file.content_type, "size": file.bytes.len()});
        let c = json!({"id": cid, "type": "Comment", "author_id": agent_id, "body": body_text,
            "public": true, "created_at": ts(), "attachments": [attachment]});
        if let Some(conv) = inner.convs.get_mut(id) {
            conv.comments.push(c);
            conv.add_file("agent", file, &url);
        }
        let name = agent.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        let body = envelope(
            st,
            &ticket,
            "ticket.comment_added",
            agent_id,
            json!({"comment": {"id": cid.to_string(), "body": body_text, "is_public": true,
                "author": {"id": agent_id.to_string(), "is_staff": true, "name": name},
                "attachments": [attachment]}}),
        );
        notes.push(inner.push_note(Provider::Zendesk, id, "zendesk.comment_added", body, None));
    }
    if let AgentAction::Say(text) = action {
        // The transcript line was added by the control layer; record the comment itself.
        let cid = inner.zd.next_comment;
        inner.zd.next_comment += 1;
        let c = json!({"id": cid, "type": "Comment", "author_id": agent_id, "body": text,
            "html_body": format!("<div class=\"zd-comment\"><p>{text}</p></div>"), "public": true,
            "created_at": ts()});
        if let Some(conv) = inner.convs.get_mut(id) {
            conv.comments.push(c);
        }
        let name = agent.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        let body = envelope(
            st,
            &ticket,
            "ticket.comment_added",
            agent_id,
            json!({"comment": {"id": cid.to_string(), "body": text, "is_public": true,
                "author": {"id": agent_id.to_string(), "is_staff": true, "name": name}}}),
        );
        notes.push(inner.push_note(Provider::Zendesk, id, "zendesk.comment_added", body, None));
    }
    if let Some(conv) = inner.convs.get_mut(id) {
        sync(conv, ticket.clone());
        if let Some(r) = reason {
            conv.view.close_reason = Some(r);
        }
        if agent.is_some() && conv.view.status == ConversationStatus::Waiting {
            conv.view.status = ConversationStatus::WithAgent;
        }
    }
    if new != old {
        let body = status_changed(st, &ticket, &old, &new, agent_id);
        notes.push(inner.push_note(Provider::Zendesk, id, "zendesk.status_changed", body, None));
    }
    notes
}
