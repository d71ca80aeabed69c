//! What the relay carries besides text: a user's attachments (to the agent), an agent's
//! attachments and structured content (to the builder), and typing.
//!
//! The service checks every attachment against the provider's [`AttachmentRule`] before
//! anything is fetched or sent, so a refused attachment leaves nothing half-sent.

use serde::Serialize;
use serde_json::Value;

/// One file of a user's message, its bytes already in hand (or a link to pass on).
#[derive(Debug, Clone, PartialEq)]
pub struct OutAttachment {
    /// File name as the user gave it (`receipt.jpg`).
    pub name: String,
    /// MIME type (`image/jpeg`).
    pub content_type: String,
    /// The bytes (empty for a link).
    pub data: Vec<u8>,
    /// For [`AttachmentRule::Link`]: the builder's URL, sent as a link instead of bytes.
    pub link: Option<String>,
}

/// A user's message: text, attachments, or both.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserMessage {
    /// The text, if any.
    pub text: Option<String>,
    /// The files, in order.
    pub attachments: Vec<OutAttachment>,
}

/// How a provider carries an attachment of one content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentRule {
    /// Uploaded to the provider, up to `max_bytes`.
    Upload {
        /// The largest file the provider takes.
        max_bytes: u64,
        /// What the provider takes, for a size refusal's message.
        takes: String,
    },
    /// Sent as a link (its `url`, not fetched): the provider cannot host this type but
    /// the integration allows links.
    Link,
}

/// Why a provider cannot carry an attachment: the service answers `415` (type) or `413`
/// (size) with code `unsupported_attachment`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentRefusal {
    /// The content type is not one the provider takes.
    #[error("`{name}`: {provider} does not take `{content_type}`; it takes {takes}")]
    Type {
        /// The file name.
        name: String,
        /// The refused type.
        content_type: String,
        /// The provider's display name.
        provider: String,
        /// What it takes.
        takes: String,
    },
    /// The file is larger than the provider takes.
    #[error("`{name}` is {size} bytes; {provider} takes {takes}")]
    Size {
        /// The file name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The provider's display name.
        provider: String,
        /// What it takes.
        takes: String,
    },
}

/// An agent's file as the builder receives it in `agent_message.attachments`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InAttachment {
    /// File name.
    pub name: String,
    /// MIME type, as the provider says or as guessed from the name.
    pub content_type: String,
    /// Size in bytes, when the provider says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Where the builder downloads it: the provider's URL, or a signed `/files/…` URL
    /// of the service (filled in by the service for `provider_path` files).
    pub url: String,
    /// The provider's storage path when the file needs the provider's credentials to
    /// download (LivePerson `hosted/file` `relativePath`); never shown to the builder.
    #[serde(skip)]
    pub provider_path: Option<String>,
}

/// An agent's message with more than text: files and/or structured content.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentContent {
    /// The agent's files.
    pub attachments: Vec<InAttachment>,
    /// The provider's structured content, as sent.
    pub rich_content: Option<Value>,
}

/// The MIME type of common file extensions (for providers that give only a file type
/// or a name).
pub fn content_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

/// The media type without parameters, lower case (`Image/PNG; x=1` → `image/png`).
pub fn bare_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(content_type_for("a.JPG"), "image/jpeg");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
        assert_eq!(bare_type("Image/PNG; q=1"), "image/png");
    }
}
