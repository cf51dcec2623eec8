//! `GET /`: the operator's page, one self-contained HTML document (`page.html`: inline style
//! and script, no external asset) that polls [`super::http::OVERVIEW_PATH`] every 2 s.
//!
//! The page writes everything from the policy and the event stream with `textContent`, never
//! as markup, and its `Content-Security-Policy` allows nothing but its own inline style and
//! script (by SHA-256: no `'unsafe-inline'`) and requests to this origin: operator text
//! (zone labels, rule names and descriptions) cannot run or load anything.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The document, as built into the binary.
pub const PAGE: &str = include_str!("page.html");

/// The page's CSP, with the hashes of its one `<style>` and one `<script>` element.
pub static CSP: LazyLock<String> = LazyLock::new(|| csp(PAGE));

fn csp(page: &str) -> String {
    let style = element_hash(page, "style");
    let script = element_hash(page, "script");
    format!(
        "default-src 'none'; style-src '{style}'; script-src '{script}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `sha256-<base64>` of the text inside the first `<tag>…</tag>` of `page`.
fn element_hash(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let body = page
        .split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map(|(body, _)| body)
        .unwrap_or_else(|| panic!("page.html has no <{tag}> element"));
    let digest = Sha256::digest(body.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

pub async fn page() -> Response {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            ("content-security-policy", CSP.as_str()),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_allows_only_the_page_own_style_and_script() {
        let c = csp(PAGE);
        assert!(
            c.starts_with("default-src 'none'; style-src 'sha256-"),
            "{c}"
        );
        assert!(!c.contains("unsafe") && !c.contains("http"), "{c}");
        // One element each: a second one would not be allowed by the policy.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        // No external asset.
        assert!(!PAGE.contains("src=") && !PAGE.contains("href="));
        // The page polls the overview, relative to where it is served.
        let path = super::super::http::OVERVIEW_PATH.trim_start_matches('/');
        assert!(PAGE.contains(&format!("const OVERVIEW = \"{path}\";")));
    }

    #[test]
    fn the_hash_covers_exactly_the_element_text() {
        let h = element_hash("<p><script>x</script>", "script");
        // printf x | sha256sum | xxd -r -p | base64
        assert_eq!(h, "sha256-LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE=");
    }
}
