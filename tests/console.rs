//! The web console (`/ui`) in a real browser: `tests/oidc/console_pages.mjs`
//! drives Debian's Chromium through every page against the real server and
//! the real OpenID provider (see that script for what it plays).

mod common;

use common::{Backend, OidcProvider, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_in_chromium() {
    // The provider must know the server's callback, so the server comes first.
    let s = Server::start(Backend::Sqlite).await;
    let callback = format!("{}/login/callback", s.url);
    let idp = OidcProvider::start_with(&[
        ("OIDC_APPLICATION_TYPE", "web"),
        ("OIDC_REDIRECT_URIS", &callback),
        ("OIDC_GROUPS", r#"{"alice":["ops-admins"]}"#),
    ]);
    s.ok(
        "POST",
        "/api/providers",
        Some(json!({"name": "corp", "url": idp.issuer, "clientID": "infra-test", "clientSecret": "infra-test-secret"})),
        201,
    )
    .await;
    // alice is an admin through her provider's group.
    let admins = s
        .ok(
            "POST",
            "/api/groups",
            Some(json!({"name": "ops-admins"})),
            201,
        )
        .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": admins["id"], "destination": "infra", "role": "admin"})),
        201,
    )
    .await;
    // Two clusters; the plain user may use prod.
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();
    for name in ["prod", "scratch"] {
        s.ok(
            "POST",
            "/api/destinations",
            Some(json!({"name": name, "url": "https://127.0.0.1:6443", "ca": ca})),
            201,
        )
        .await;
    }
    let plain = s
        .ok(
            "POST",
            "/api/users",
            Some(json!({"name": "pat", "password": "pat-password-1"})),
            201,
        )
        .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": plain["id"], "destination": "prod", "role": "view"})),
        201,
    )
    .await;

    // The same server under another of its names (localhost for 127.0.0.1).
    let alt = s.url.replace("127.0.0.1", "localhost");
    let report = common::chromium_script(
        "console_pages.mjs",
        &[
            ("BASE", s.url.as_str()),
            ("BASE_ALT", alt.as_str()),
            ("ADMIN_LOGIN", "alice"),
            ("ADMIN_NAME", "alice@example.com"),
            ("PROVIDER", "corp"),
            ("IDP_ISSUER", idp.issuer.as_str()),
            ("PLAIN_USER", "pat"),
            ("PLAIN_PASSWORD", "pat-password-1"),
            ("DESTINATION", "prod"),
            ("SCRATCH", "scratch"),
        ],
    )
    .await;
    assert!(report["pages"].as_u64().unwrap() >= 30, "{report}");

    // Every change the console made is in the audit log with its author.
    let audit = s.ok("GET", "/api/audit?limit=1000", None, 200).await;
    let by = |action: &str| -> Vec<String> {
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["actor"].as_str().unwrap().to_string())
            .collect()
    };
    for action in [
        "user.create",
        "user.remove",
        "group.create",
        "grant.create",
        "grant.remove",
        "destination.remove",
        "provider.create",
        "provider.remove",
        "key.create",
        "identity.create",
    ] {
        let actors = by(action);
        assert!(
            actors.iter().any(|a| a == "alice@example.com"),
            "{action}: {actors:?}"
        );
    }
}
