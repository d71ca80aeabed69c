//! The `transcript` parameter of `start_live_chat`: the conversation so far, for the agent.
//!
//! A transcript is an array of `{"from": "user"|"bot", "text": "...", "at": "RFC 3339"?}`,
//! oldest first, usually `"<? $history ?>"`. Only the last `transcript_max_messages`
//! (default [`DEFAULT_MAX_MESSAGES`]) are sent. Each provider receives it the way its
//! agents read it (see the provider modules); this module holds what they share: parsing
//! and validation, the text form of a line, and splitting into pieces under a size limit
//! counted in UTF-8 bytes, never cutting inside a character.
//!
//! **Decision (run time):** the transcript is an aid, the handoff is the point. A rendered
//! transcript that is not an array, or an entry that is malformed, is left out with a
//! warning and the handoff goes on. `check` reports malformed literal transcripts as errors.

use regex::Regex;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

use crate::providers::call::{config_err, is_absent, type_name};
use crate::providers::ActionError;

/// Messages sent when `transcript_max_messages` is not given.
pub const DEFAULT_MAX_MESSAGES: usize = 50;

/// The largest `transcript_max_messages` accepted.
pub const MAX_MESSAGES_CEILING: usize = 500;

/// Who wrote a transcript message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The end user.
    User,
    /// The chatbot.
    Bot,
}

impl Speaker {
    /// The wire name (`user`, `bot`).
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::User => "user",
            Speaker::Bot => "bot",
        }
    }

    /// How the agent sees the speaker in a text transcript.
    pub fn label(self) -> &'static str {
        match self {
            Speaker::User => "Cliente",
            Speaker::Bot => "Bot",
        }
    }
}

/// One message of the conversation so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Who wrote it.
    pub from: Speaker,
    /// What was written.
    pub text: String,
    /// When, as RFC 3339 text exactly as given.
    pub at: Option<String>,
}

impl Entry {
    /// The line an agent reads: `[at] Cliente: text` (no `[at]` when unknown).
    pub fn line(&self) -> String {
        match &self.at {
            Some(at) => format!("[{at}] {}: {}", self.from.label(), self.text),
            None => format!("{}: {}", self.from.label(), self.text),
        }
    }
}

/// The messages to send, oldest first, and what was left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transcript {
    /// At most `transcript_max_messages` entries, the most recent ones, oldest first.
    pub entries: Vec<Entry>,
    /// Why something was left out, for the trace.
    pub warnings: Vec<String>,
}

fn rfc3339() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$",
        )
        .unwrap_or_else(|_| unreachable!("the RFC 3339 pattern is valid"))
    })
}

/// Is `s` an RFC 3339 date-time (`2026-11-26T10:02:11Z`, `…-03:00`, fractions allowed)?
pub fn is_rfc3339(s: &str) -> bool {
    let Some(c) = rfc3339().captures(s) else {
        return false;
    };
    let n = |i: usize| {
        c.get(i)
            .and_then(|m| m.as_str().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (month, day, hour, min, sec) = (n(2), n(3), n(4), n(5), n(6));
    let offset_ok = c.get(9).is_none() || (n(9) <= 23 && n(10) <= 59);
    (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour <= 23
        && min <= 59
        && sec <= 60
        && offset_ok
}

/// One entry from JSON; `Err` says what is wrong and where (relative JSON pointer).
fn parse_entry(v: &Value) -> Result<Entry, (String, String)> {
    let Value::Object(o) = v else {
        return Err((
            String::new(),
            format!(
                "must be an object {{\"from\", \"text\", \"at\"?}}, got {}",
                type_name(v)
            ),
        ));
    };
    let from = match o.get("from") {
        Some(Value::String(s)) if s == "user" => Speaker::User,
        Some(Value::String(s)) if s == "bot" => Speaker::Bot,
        Some(other) => {
            return Err((
                "/from".into(),
                format!("`from` must be \"user\" or \"bot\", got {other}"),
            ))
        }
        // A missing key has no position of its own: point at the entry.
        None => return Err((String::new(), "`from` is missing".into())),
    };
    let text = match o.get("text") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err((
                "/text".into(),
                format!("`text` must be a string, got {}", type_name(other)),
            ))
        }
        None => return Err((String::new(), "`text` is missing".into())),
    };
    let at = match o.get("at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_rfc3339(s) => Some(s.clone()),
        Some(other) => {
            return Err((
                "/at".into(),
                format!("`at` must be an RFC 3339 date-time such as \"2026-11-26T10:02:11-03:00\", got {other}"),
            ))
        }
    };
    Ok(Entry { from, text, at })
}

/// `transcript_max_messages` from rendered parameters (default [`DEFAULT_MAX_MESSAGES`]).
pub fn max_messages(params: &Map<String, Value>) -> Result<usize, ActionError> {
    match params.get("transcript_max_messages") {
        None => Ok(DEFAULT_MAX_MESSAGES),
        Some(v) if is_absent(v) => Ok(DEFAULT_MAX_MESSAGES),
        Some(v) => check_max_messages(v),
    }
}

/// Validates a `transcript_max_messages` value: an integer from 1 to
/// [`MAX_MESSAGES_CEILING`] (a whole-number string is accepted, as templates give).
pub fn check_max_messages(v: &Value) -> Result<usize, ActionError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (1..=MAX_MESSAGES_CEILING as u64).contains(&n) => Ok(n as usize),
        _ => Err(config_err(format!(
            "`transcript_max_messages` must be an integer from 1 to {MAX_MESSAGES_CEILING}, got {v}"
        ))),
    }
}

/// The transcript of the rendered parameters: `None` when unset, `null` or `""`.
/// Malformed entries are left out with a warning (see the module docs).
pub fn from_params(params: &Map<String, Value>) -> Result<Option<Transcript>, ActionError> {
    let max = max_messages(params)?;
    let Some(v) = params.get("transcript").filter(|v| !is_absent(v)) else {
        return Ok(None);
    };
    let mut t = Transcript::default();
    let Value::Array(items) = v else {
        t.warnings.push(format!(
            "`transcript` must be an array of {{\"from\", \"text\", \"at\"?}}, got {}: no transcript was sent",
            type_name(v)
        ));
        return Ok(Some(t));
    };
    for (i, item) in items.iter().enumerate() {
        match parse_entry(item) {
            Ok(e) if e.text.trim().is_empty() => {}
            Ok(e) => t.entries.push(e),
            Err((ptr, msg)) => t.warnings.push(format!(
                "`transcript/{i}{ptr}`: {msg}; that message was left out"
            )),
        }
    }
    if t.entries.len() > max {
        let dropped = t.entries.len() - max;
        t.entries.drain(..dropped);
        t.warnings.push(format!(
            "`transcript` has {} messages: the oldest {dropped} were left out (`transcript_max_messages` = {max})",
            max + dropped
        ));
    }
    Ok(Some(t))
}

/// Load-time problems of a `transcript` value as written, as (pointer relative to
/// `parameters`, message). Template strings stand for any value of the right type.
pub fn check_static(v: &Value) -> Vec<(String, String)> {
    let templated = |v: &Value| matches!(v, Value::String(s) if s.contains("<?"));
    let mut out = Vec::new();
    if is_absent(v) || templated(v) {
        return out;
    }
    let Value::Array(items) = v else {
        out.push((
            "/transcript".into(),
            format!(
                "`transcript` must be an array of {{\"from\": \"user\"|\"bot\", \"text\", \"at\"?}}, got {}",
                type_name(v)
            ),
        ));
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        if templated(item) {
            continue;
        }
        // Put placeholders of the right type where templates are, then validate.
        let concrete = match item {
            Value::Object(o) => {
                let mut c = o.clone();
                for (k, x) in c.iter_mut() {
                    if templated(x) {
                        *x = match k.as_str() {
                            "from" => json!("user"),
                            "at" => Value::Null,
                            _ => json!("text"),
                        };
                    }
                }
                Value::Object(c)
            }
            other => other.clone(),
        };
        if let Err((ptr, msg)) = parse_entry(&concrete) {
            out.push((format!("/transcript/{i}{ptr}"), msg));
        }
    }
    out
}

/// Splits `s` into pieces of at most `max` bytes, never inside a UTF-8 character; a cut
/// falls after the last whitespace of the piece when that keeps at least half of it.
/// The pieces, concatenated, are exactly `s`.
pub fn split_text(s: &str, max: usize) -> Vec<&str> {
    // A character is at most 4 bytes: below that no progress could be guaranteed.
    let max = max.max(4);
    let mut out = Vec::new();
    let mut rest = s;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(ws) = rest[..cut].rfind(char::is_whitespace) {
            let after = ws + rest[ws..].chars().next().map_or(1, char::len_utf8);
            if after >= cut / 2 {
                cut = after;
            }
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

/// The header of a transcript block: numbered when there are several.
pub fn block_header(part: usize, parts: usize) -> String {
    if parts <= 1 {
        "Histórico da conversa com o bot".to_string()
    } else {
        format!("Histórico da conversa com o bot ({part}/{parts})")
    }
}

/// Packs the entries' lines into text blocks of at most `limit` UTF-8 bytes, oldest
/// first, each starting with [`block_header`]. A line longer than a block is split
/// with [`split_text`].
pub fn text_blocks(entries: &[Entry], limit: usize) -> Vec<String> {
    // Room for the longest header any realistic count gives, plus its newline.
    let reserve = block_header(99_999, 99_999).len() + 1;
    let budget = limit.saturating_sub(reserve).max(4);
    let mut bodies: Vec<String> = Vec::new();
    let mut cur = String::new();
    for e in entries {
        let line = e.line();
        for piece in split_text(&line, budget) {
            let needed = if cur.is_empty() {
                piece.len()
            } else {
                cur.len() + 1 + piece.len()
            };
            if needed > budget && !cur.is_empty() {
                bodies.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push('\n');
            }
            cur.push_str(piece);
        }
    }
    if !cur.is_empty() {
        bodies.push(cur);
    }
    let n = bodies.len();
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| format!("{}\n{b}", block_header(i + 1, n)))
        .collect()
}

/// For providers that read text (LivePerson messages, Zendesk comments): the transcript
/// as text blocks of at most `limit` bytes, plus the warnings. Empty when unset.
pub fn text_for(
    params: &Map<String, Value>,
    limit: usize,
) -> Result<(Vec<String>, Vec<String>), ActionError> {
    match from_params(params)? {
        None => Ok((Vec::new(), Vec::new())),
        Some(t) => Ok((text_blocks(&t.entries, limit), t.warnings)),
    }
}

/// For the ALTU connector: the `transcript` array of `OPEN_CONVERSATION`, each `text` at
/// most `limit` bytes (a longer message becomes consecutive entries, every piece after the
/// first with `"continued": true`), the whole at most `total` bytes of text (the oldest
/// messages are left out first, with a warning), plus the warnings. `None` when unset or
/// empty.
pub fn json_for(
    params: &Map<String, Value>,
    limit: usize,
    total: usize,
) -> Result<(Option<Value>, Vec<String>), ActionError> {
    let Some(mut t) = from_params(params)? else {
        return Ok((None, Vec::new()));
    };
    // Keep the most recent messages that fit in `total`, whole.
    let mut size = 0;
    let keep = t
        .entries
        .iter()
        .rev()
        .take_while(|e| {
            size += e.text.len();
            size <= total
        })
        .count();
    let dropped = t.entries.len() - keep;
    if dropped > 0 {
        t.entries.drain(..dropped);
        t.warnings.push(format!(
            "`transcript` is over {total} bytes of text: the oldest {dropped} message(s) were left out"
        ));
    }
    let mut out = Vec::new();
    for e in &t.entries {
        for (i, piece) in split_text(&e.text, limit).into_iter().enumerate() {
            let mut o = Map::new();
            o.insert("from".into(), json!(e.from.as_str()));
            o.insert("text".into(), json!(piece));
            if let Some(at) = &e.at {
                o.insert("at".into(), json!(at));
            }
            if i > 0 {
                o.insert("continued".into(), json!(true));
            }
            out.push(Value::Object(o));
        }
    }
    Ok(((!out.is_empty()).then_some(Value::Array(out)), t.warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(from: Speaker, text: &str) -> Entry {
        Entry {
            from,
            text: text.into(),
            at: None,
        }
    }

    #[test]
    fn rfc3339_forms() {
        for ok in [
            "2026-11-26T10:02:11Z",
            "2026-11-26T10:02:11.123-03:00",
            "2026-11-26 10:02:11+00:00",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "26/11/2026 10:02",
            "2026-11-26T25:00:00Z",
            "2026-11-26T10:02:11",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn split_never_cuts_a_character_and_loses_nothing() {
        let s = "ação 😀 çã ".repeat(97);
        for max in [4, 5, 7, 16, 33, 100] {
            let pieces = split_text(&s, max);
            assert_eq!(pieces.concat(), s, "max {max}");
            assert!(pieces.iter().all(|p| p.len() <= max && !p.is_empty()));
        }
    }

    #[test]
    fn split_prefers_whitespace() {
        assert_eq!(split_text("aaaa bbbb cccc", 10), vec!["aaaa bbbb ", "cccc"]);
    }

    #[test]
    fn blocks_respect_the_limit_and_keep_order() {
        let entries: Vec<Entry> = (0..40)
            .map(|i| entry(Speaker::User, &format!("mensagem número {i} – café ☕")))
            .collect();
        let blocks = text_blocks(&entries, 200);
        assert!(blocks.len() > 1);
        assert!(blocks.iter().all(|b| b.len() <= 200));
        assert!(blocks[0].starts_with(&block_header(1, blocks.len())));
        let all: Vec<&str> = blocks
            .iter()
            .flat_map(|b| b.lines().skip(1))
            .collect::<Vec<_>>();
        assert_eq!(all.len(), 40);
        assert_eq!(all[0], "Cliente: mensagem número 0 – café ☕");
        assert_eq!(all[39], "Cliente: mensagem número 39 – café ☕");
    }

    #[test]
    fn keeps_the_most_recent_messages() {
        let items: Vec<Value> = (0..60)
            .map(|i| json!({"from": "user", "text": format!("m{i}")}))
            .collect();
        let mut p = Map::new();
        p.insert("transcript".into(), Value::Array(items));
        p.insert("transcript_max_messages".into(), json!(10));
        let t = from_params(&p).unwrap().unwrap();
        assert_eq!(t.entries.len(), 10);
        assert_eq!(t.entries[0].text, "m50");
        assert_eq!(t.warnings.len(), 1);
    }

    #[test]
    fn the_connector_transcript_keeps_the_newest_messages_within_its_total() {
        let items: Vec<Value> = (0..10)
            .map(|i| json!({"from": "user", "text": format!("{i}{}", "x".repeat(99))}))
            .collect();
        let mut p = Map::new();
        p.insert("transcript".into(), Value::Array(items));
        let (v, w) = json_for(&p, 40, 350).unwrap();
        let entries = v.unwrap();
        let texts: String = entries
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["text"].as_str())
            .collect();
        assert_eq!(texts.len(), 300);
        assert!(texts.starts_with('7'), "{texts}");
        assert!(w[0].contains("the oldest 7 message(s)"), "{w:?}");
    }

    #[test]
    fn static_check_points_at_the_entry() {
        let v = json!([{"from": "user", "text": "oi"}, {"from": "agent", "text": "x"},
                       {"from": "<? $who ?>", "text": "<? input.text ?>", "at": "ontem"}]);
        let p = check_static(&v);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].0, "/transcript/1/from");
        assert_eq!(p[1].0, "/transcript/2/at");
    }
}
