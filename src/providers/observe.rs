//! Every HTTP attempt the provider clients make, for the service's timeline and logs:
//! step, method, URL (without its query), status, attempt number, duration. Recording is
//! scoped to a future ([`collect`]); outside one, attempts are only logged.

use std::cell::RefCell;
use std::future::Future;

use serde::Serialize;

/// One HTTP attempt to a provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// When the attempt started (Unix ms).
    pub at_ms: i64,
    /// The provider step (`"csds"`, `"app_jwt"`, `"ticket"`, …).
    pub step: String,
    /// HTTP method.
    pub method: String,
    /// URL without query string (ids only; credentials travel in headers and bodies).
    pub url: String,
    /// The HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// 1 for the first try, 2 for the first retry, …
    pub attempt: u32,
    /// Wall time of this attempt, in milliseconds.
    pub duration_ms: f64,
    /// `ok` or the error kind.
    pub outcome: String,
}

tokio::task_local! {
    static CALLS: RefCell<Vec<CallRecord>>;
}

/// Runs `f`, returning what it returned and the provider attempts it made (in order).
pub async fn collect<F: Future>(f: F) -> (F::Output, Vec<CallRecord>) {
    CALLS
        .scope(RefCell::new(Vec::new()), async {
            let out = f.await;
            let calls = CALLS.with(|c| c.take());
            (out, calls)
        })
        .await
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Records one attempt (and logs it).
pub(crate) fn record(mut r: CallRecord) {
    if let Some(q) = r.url.find(['?', '#']) {
        r.url.truncate(q);
    }
    // A configured secret may sit in the path (a token as a path segment).
    r.url = crate::redact::url(&r.url);
    // Steps are labelled `<provider> <step>` ("liveperson csds").
    let provider = r.step.split(' ').next().unwrap_or_default();
    tracing::info!(
        provider,
        step = %r.step,
        method = %r.method,
        url = %r.url,
        status = r.status,
        attempt = r.attempt,
        duration_ms = r.duration_ms,
        outcome = %r.outcome,
        "provider request"
    );
    let _ = CALLS.try_with(|c| c.borrow_mut().push(r));
}
