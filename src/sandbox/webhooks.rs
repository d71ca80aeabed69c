//! Webhook delivery: signing per provider, the duplicate and out-of-order switches, and the
//! outbox of failed deliveries.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::model::{DeliveryState, Provider};
use super::signing::{connector_claims, liveperson_signature, sign_hs256, zendesk_signature};
use super::state::{AppState, Inner, Note};
use super::util::{now_s, rfc3339};

/// Delivers in the background (provider API handlers do not wait for their webhooks).
pub(crate) fn spawn(st: Arc<AppState>, ids: Vec<u64>) {
    if ids.is_empty() {
        return;
    }
    tokio::spawn(async move { dispatch(&st, &ids).await });
}

/// Delivers each notification in order, applying the provider's duplicate and out-of-order
/// switches.
pub(crate) async fn dispatch(st: &Arc<AppState>, ids: &[u64]) {
    for &id in ids {
        deliver(st, id).await;
        let (dup, previous) = {
            let inner = st.lock();
            let Some(note) = inner.note(id) else { continue };
            let s = inner.webhooks.get(note.view.provider);
            let prev = if s.out_of_order {
                previous_of(&inner, note)
            } else {
                None
            };
            (s.duplicate, prev)
        };
        if dup {
            deliver(st, id).await;
        }
        if let Some(p) = previous {
            deliver(st, p).await;
        }
    }
}

/// The notification produced just before `note` for the same conversation.
fn previous_of(inner: &Inner, note: &Note) -> Option<u64> {
    inner
        .notes
        .iter()
        .rev()
        .filter(|n| n.view.id < note.view.id)
        .find(|n| {
            n.view.provider == note.view.provider
                && n.view.conversation_id == note.view.conversation_id
        })
        .map(|n| n.view.id)
}

fn headers_for(
    st: &AppState,
    note: &Note,
    url: &str,
    order: super::model::SignatureOrder,
) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    h.insert("content-type".to_string(), "application/json".to_string());
    match note.view.provider {
        Provider::Liveperson => {
            let cfg = &st.cfg.liveperson;
            let app = note
                .lp_client_id
                .as_ref()
                .and_then(|id| cfg.apps.iter().find(|a| &a.client_id == id))
                .or_else(|| cfg.apps.first());
            let (client_id, secret) = app
                .map(|a| (a.client_id.clone(), a.client_secret.clone()))
                .unwrap_or_default();
            h.insert("x-liveperson-account-id".into(), cfg.account_id.clone());
            h.insert("x-liveperson-client-id".into(), client_id);
            h.insert(
                "x-liveperson-signature".into(),
                liveperson_signature(&secret, note.raw.as_bytes()),
            );
        }
        Provider::Zendesk => {
            let ts = rfc3339(now_s());
            let sig = zendesk_signature(
                &st.cfg.zendesk.webhook_secret,
                &ts,
                note.raw.as_bytes(),
                order,
            );
            h.insert("x-zendesk-webhook-id".into(), "01SANDBOXWEBHOOK".into());
            h.insert(
                "x-zendesk-webhook-invocation-id".into(),
                note.view.id.to_string(),
            );
            h.insert("x-zendesk-webhook-signature".into(), sig);
            h.insert("x-zendesk-webhook-signature-timestamp".into(), ts);
        }
        Provider::Altu => {
            // Protocol §3/§5: a fresh token (new `jti`) per attempt, bound to the target
            // URL and to our caller's `conversation_id`.
            let cfg = &st.cfg.altu;
            let conversation_id = note
                .view
                .body
                .get("conversation_id")
                .and_then(|c| c.as_str())
                .unwrap_or_default();
            let claims = connector_claims(
                super::altu::PLATFORM_ISSUER,
                url,
                &cfg.access_token,
                conversation_id,
                now_s(),
                60,
            );
            let jwt = sign_hs256(cfg.access_key.as_bytes(), &claims);
            h.insert("authorization".into(), format!("Bearer {jwt}"));
        }
    }
    h
}

/// One delivery attempt; returns whether the target accepted it.
pub(crate) async fn deliver(st: &Arc<AppState>, id: u64) -> bool {
    let (url, headers, raw, provider) = {
        let mut inner = st.lock();
        let Some(note) = inner.note(id) else {
            return false;
        };
        let provider = note.view.provider;
        let settings = inner.webhooks.get(provider).clone();
        let Some(first) = settings.url.clone() else {
            if let Some(n) = inner.note_mut(id) {
                n.view.target = None;
                if n.view.state != DeliveryState::Delivered {
                    n.view.state = DeliveryState::Recorded;
                }
            }
            return false;
        };
        // `spread`: notification `id`'s attempt `k` goes to target `(id + k) mod n`, so
        // notifications are shared out and a retry tries the next replica, as a balancer would.
        let url = match settings.spread.len() {
            0 => first,
            n => {
                let i = (id as usize).wrapping_add(note.view.attempts as usize) % (n + 1);
                if i == 0 {
                    first
                } else {
                    settings.spread[i - 1].clone()
                }
            }
        };
        let headers = headers_for(st, note, &url, settings.signature_order);
        let raw = note.raw.clone();
        if let Some(n) = inner.note_mut(id) {
            n.view.headers = headers.clone();
            n.view.target = Some(url.clone());
        }
        (url, headers, raw, provider)
    };
    let mut req = st.http.post(&url).body(raw);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let result = req.send().await;
    let mut inner = st.lock();
    let Some(n) = inner.note_mut(id) else {
        return false;
    };
    n.view.attempts += 1;
    let ok = match result {
        Ok(resp) => {
            let s = resp.status().as_u16();
            n.view.last_status = Some(s);
            n.view.last_error = None;
            match provider {
                // LivePerson counts only 200 and 201 as delivered.
                Provider::Liveperson => s == 200 || s == 201,
                _ => (200..300).contains(&s),
            }
        }
        Err(e) => {
            n.view.last_status = None;
            n.view.last_error = Some(if e.is_timeout() {
                format!("timeout: {e}")
            } else {
                e.to_string()
            });
            false
        }
    };
    if ok {
        n.view.state = DeliveryState::Delivered;
    } else if n.view.state != DeliveryState::Delivered {
        n.view.state = DeliveryState::Failed;
    }
    ok
}
