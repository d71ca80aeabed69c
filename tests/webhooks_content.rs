//! Agent content in provider webhooks (issue 18): LivePerson `hosted/file`,
//! `RichContentEvent` (`content` or `message`) and `ChatStateEvent`; Zendesk comment
//! attachments; ALTU v1.2 `AGENT_MESSAGE.attachments` and `AGENT_TYPING`.

use serde_json::{json, Value};
use transbordo::providers::webhooks::{parse_altu, parse_liveperson, parse_zendesk, EventKind};

fn lp(event: Value, role: &str, seq: Option<u64>) -> Vec<u8> {
    let mut change = json!({"originatorId": "a1", "originatorMetadata": {"id": "a1", "role": role},
        "conversationId": "conv-1", "event": event});
    if let Some(s) = seq {
        change["sequence"] = json!(s);
    }
    json!({"type": "ms.MessagingEventNotification", "body": {"changes": [change]}})
        .to_string()
        .into_bytes()
}

#[test]
fn liveperson_hosted_file_rich_content_and_chat_state() {
    let evs = parse_liveperson(&lp(
        json!({"type": "ContentEvent", "contentType": "hosted/file",
               "message": {"caption": "the form", "relativePath": "/v1/AUTH_async-images/1/x.PDF", "fileType": "PDF"}}),
        "ASSIGNED_AGENT",
        Some(4),
    ))
    .unwrap();
    let EventKind::AgentContent { text, content, .. } = &evs[0].kind else {
        panic!("{evs:?}")
    };
    assert_eq!(text, "the form");
    assert_eq!(content.attachments[0].name, "x.PDF");
    assert_eq!(content.attachments[0].content_type, "application/pdf");
    assert_eq!(
        content.attachments[0].provider_path.as_deref(),
        Some("/v1/AUTH_async-images/1/x.PDF")
    );
    // The builder never sees the storage path.
    assert!(serde_json::to_value(&content.attachments[0])
        .unwrap()
        .get("provider_path")
        .is_none());
    assert_eq!(evs[0].dedup_id.as_deref(), Some("ms:conv-1:4"));

    for key in ["content", "message"] {
        let rich = json!({"type": "vertical", "elements": [{"type": "text", "text": "hi"}]});
        let evs = parse_liveperson(&lp(
            json!({"type": "RichContentEvent", key: rich.clone()}),
            "ASSIGNED_AGENT",
            Some(5),
        ))
        .unwrap();
        let EventKind::AgentContent { content, .. } = &evs[0].kind else {
            panic!("{key}: {evs:?}")
        };
        assert_eq!(content.rich_content.as_ref(), Some(&rich), "{key}");
    }

    let typing = |state: &str| {
        parse_liveperson(&lp(
            json!({"type": "ChatStateEvent", "chatState": state}),
            "ASSIGNED_AGENT",
            None,
        ))
        .unwrap()
    };
    assert!(matches!(
        typing("COMPOSING")[0].kind,
        EventKind::AgentTyping { typing: true, .. }
    ));
    assert!(matches!(
        typing("ACTIVE")[0].kind,
        EventKind::AgentTyping { typing: false, .. }
    ));
    assert_eq!(typing("COMPOSING")[0].dedup_id, None);
    // The consumer's own typing (echo) is not the agent's.
    let echo = parse_liveperson(&lp(
        json!({"type": "ChatStateEvent", "chatState": "COMPOSING"}),
        "CONSUMER",
        None,
    ))
    .unwrap();
    assert!(echo.is_empty());
}

#[test]
fn zendesk_public_comment_attachments() {
    let body = json!({"type": "zen:event-type:ticket.comment_added", "id": "e1",
        "detail": {"id": "55"},
        "event": {"comment": {"id": "9", "body": "form attached", "is_public": true,
            "author": {"id": "7", "is_staff": true},
            "attachments": [{"file_name": "form.pdf", "content_type": "application/pdf",
                             "size": 1234, "content_url": "https://x.zendesk.com/attachments/token/abc/?name=form.pdf"}]}}});
    let evs = parse_zendesk(body.to_string().as_bytes()).unwrap();
    let EventKind::AgentContent { text, content, .. } = &evs[0].kind else {
        panic!("{evs:?}")
    };
    assert_eq!(text, "form attached");
    let a = serde_json::to_value(&content.attachments[0]).unwrap();
    assert_eq!(
        a,
        json!({"name": "form.pdf", "content_type": "application/pdf", "size": 1234,
               "url": "https://x.zendesk.com/attachments/token/abc/?name=form.pdf"})
    );
}

#[test]
fn altu_v1_2_attachments_and_typing() {
    let env = |event: &str, data: Value| {
        json!({"event": event, "event_id": "e1", "conversation_id": "h1",
               "platform_conversation_id": "p1", "data": data})
        .to_string()
    };
    let ev = parse_altu(
        env(
            "AGENT_MESSAGE",
            json!({"attachments": [{"name": "a.png", "content_type": "image/png", "url": "https://p/a.png"}]}),
        )
        .as_bytes(),
    )
    .unwrap();
    let EventKind::AgentContent { text, content, .. } = &ev.event.kind else {
        panic!("{ev:?}")
    };
    assert_eq!(text, "");
    assert_eq!(content.attachments[0].url, "https://p/a.png");
    let ev = parse_altu(env("AGENT_TYPING", json!({"typing": true})).as_bytes()).unwrap();
    assert!(matches!(
        ev.event.kind,
        EventKind::AgentTyping { typing: true, .. }
    ));
    // Malformed: a typing event without a boolean, an attachment without a URL.
    assert!(parse_altu(env("AGENT_TYPING", json!({})).as_bytes()).is_err());
    assert!(parse_altu(
        env("AGENT_MESSAGE", json!({"attachments": [{"name": "a.png"}]})).as_bytes()
    )
    .is_err());
}
