//! The service config: the shipped example, paths, env expansion, errors with line:col.

use std::path::Path;

use transbordo::service::{ConfigError, ServiceConfig};

const INTEGRATIONS: &str = "[[integration]]\nid = 7\nprovider = \"liveperson\"\naccount_id = \"1\"\nclient_id = \"c\"\nclient_secret = \"x\"\nwait_timeout_s = 5\n";

fn dir_with_integrations(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(name), INTEGRATIONS).unwrap();
    d
}

#[test]
fn shipped_example_parses() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/service.toml"
    ))
    .unwrap();
    let d = dir_with_integrations("sandbox-integrations.toml");
    std::env::set_var("BUILDER_SECRET", "s3cr3t-value");
    std::env::set_var("BUILDER_API_TOKEN", "api-token-from-env-0001");
    let c = ServiceConfig::from_toml_str(&src, "service.toml", d.path()).unwrap();
    assert_eq!(c.api.tokens, ["api-token-from-env-0001"]);
    assert_eq!(c.api.max_run_body_bytes, 1 << 20);
    assert_eq!(c.webhooks.max_body_bytes, 256 << 10);
    assert_eq!(c.listen.to_string(), "127.0.0.1:8920");
    assert_eq!(
        c.database.sqlite_path(),
        Some(d.path().join("transbordo.db").as_path())
    );
    assert_eq!(c.builder.signing_secret, "s3cr3t-value");
    assert_eq!(c.delivery.initial_backoff.as_millis(), 500);
    assert_eq!(c.webhooks.zendesk_replay_window_s, 300);
    assert_eq!(c.reconcile.unresolved_after_s, 900);
    // Secrets stay out of Debug output.
    assert!(!format!("{c:?}").contains("s3cr3t-value"));
    assert!(!format!("{c:?}").contains("api-token-from-env-0001"));
}

fn err(src: &str, base: &Path) -> String {
    match ServiceConfig::from_toml_str(src, "svc.toml", base) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error for {src}"),
    }
}

#[test]
fn errors_point_at_line_and_column() {
    let d = dir_with_integrations("i.toml");
    let ok = "integrations = \"i.toml\"\n[builder]\ncallback_url = \"http://127.0.0.1:9/e\"\nsigning_secret = \"s\"\n";
    assert!(ServiceConfig::from_toml_str(ok, "svc.toml", d.path()).is_ok());
    let e = err(&format!("listen = \"nope\"\n{ok}"), d.path());
    assert!(e.starts_with("svc.toml:1:10: `listen`"), "{e}");
    let e = err(&ok.replace("http://127.0.0.1:9/e", "ftp://x"), d.path());
    assert!(e.starts_with("svc.toml:3:16:"), "{e}");
    let e = err(
        &ok.replace("\"s\"", "\"${TRANSBORDO_TEST_UNSET_VAR}\""),
        d.path(),
    );
    assert!(
        e.starts_with("svc.toml:4:18:") && e.contains("TRANSBORDO_TEST_UNSET_VAR"),
        "{e}"
    );
    let e = err(&format!("{ok}bogus = 1\n"), d.path());
    assert!(e.starts_with("svc.toml:5:1:") && e.contains("bogus"), "{e}");
    let e = err(&ok.replace("i.toml", "missing.toml"), d.path());
    assert!(
        e.starts_with("svc.toml:1:16:") && e.contains("missing.toml"),
        "{e}"
    );
    let e = err("integrations = \"i.toml\"\n", d.path());
    assert!(e.contains("builder"), "{e}");
    let e = err("listen = [\n", d.path());
    assert!(e.starts_with("svc.toml:"), "{e}");
    let e = err(&format!("flows_dir = \"nowhere\"\n{ok}"), d.path());
    assert!(e.starts_with("svc.toml:1:13:"), "{e}");
    let e = err(
        &format!("{ok}[reconcile]\nunresolved_after_s = 5\n"),
        d.path(),
    );
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.bind(|| insta::assert_snapshot!("reconcile_deadline_too_short", e));
}

/// `database_connections`: PostgreSQL only, 1 to 1000; 8 when not given.
#[test]
fn database_connections_is_checked() {
    let d = dir_with_integrations("i.toml");
    let ok = "integrations = \"i.toml\"\n[builder]\ncallback_url = \"http://127.0.0.1:9/e\"\nsigning_secret = \"s\"\n";
    let pg = "database = \"postgres://u@127.0.0.1:5432/db\"\n";
    let parse = |src: String| ServiceConfig::from_toml_str(&src, "svc.toml", d.path());
    assert_eq!(parse(format!("{pg}{ok}")).unwrap().database_connections, 8);
    assert_eq!(
        parse(format!("{pg}database_connections = 3\n{ok}"))
            .unwrap()
            .database_connections,
        3
    );
    let errors = [
        err(&format!("{pg}database_connections = 0\n{ok}"), d.path()),
        err(&format!("{pg}database_connections = 5000\n{ok}"), d.path()),
        err(&format!("{pg}database_connections = -1\n{ok}"), d.path()),
        err(&format!("database_connections = 4\n{ok}"), d.path()),
    ];
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.bind(|| insta::assert_snapshot!("database_connections_errors", errors.join("\n")));
}

#[test]
fn missing_file_is_an_io_error() {
    let e = ServiceConfig::from_file(Path::new("/nonexistent/service.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
}
