//! What the server's web pages share (the device sign-in pages, the web
//! console, the development provider's sign-in): the headers every page
//! and redirect carries, its Content-Security-Policy, and cookies (read
//! with the `cookie` crate, written as `__Host-` cookies).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// A policy for pages with one inline style of ours and maybe one script,
/// no framing, no base tag, and forms only to `form_action` (CSP sources,
/// e.g. `'self'`; empty: forms nowhere; `None`: no such rule).
pub fn csp(style: &str, script: Option<&str>, form_action: Option<&[String]>) -> String {
    let script = match script {
        Some(s) => format!("script-src {}; ", crate::web::csp_hash(s)),
        None => String::new(),
    };
    let form_action = match form_action {
        None => String::new(),
        Some([]) => "form-action 'none'; ".to_string(),
        Some(sources) => format!("form-action {}; ", sources.join(" ")),
    };
    format!(
        "default-src 'none'; style-src {}; {script}img-src 'self'; {form_action}\
         frame-ancestors 'none'; base-uri 'none'",
        crate::web::csp_hash(style)
    )
}

/// The headers every page and redirect carries: no caching, no framing,
/// no sniffing, the referrer policy, the CSP, and the cookies to set.
pub fn harden(resp: &mut Response, csp: &str, referrer: &'static str, cookies: &[String]) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static(referrer));
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
}

/// A page with those headers.
pub fn html(
    status: StatusCode,
    document: String,
    csp: &str,
    referrer: &'static str,
    cookies: &[String],
) -> Response {
    let mut resp = (status, Html(document)).into_response();
    harden(&mut resp, csp, referrer, cookies);
    resp
}

/// A 303 to `location` with those headers.
pub fn see_other(
    location: &str,
    csp: &str,
    referrer: &'static str,
    cookies: &[String],
) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    harden(&mut resp, csp, referrer, cookies);
    resp
}

/// A cookie of the request, by name.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// A `__Host-` cookie: HTTPS only, this host, every path, out of scripts'
/// reach; a session cookie without `max_age_secs`.
pub fn set_cookie(name: &str, value: &str, max_age_secs: Option<i64>, same_site: &str) -> String {
    let mut c = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}");
    if let Some(secs) = max_age_secs {
        c.push_str(&format!("; Max-Age={}", secs.max(0)));
    }
    c
}

/// Tells the browser to forget a cookie.
pub fn clear_cookie(name: &str) -> String {
    set_cookie(name, "", Some(0), "Lax")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_read_and_written() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; __Host-x=tok_en-1; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, "__Host-x").as_deref(), Some("tok_en-1"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(
            set_cookie("__Host-x", "v", Some(60), "Lax"),
            "__Host-x=v; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        assert_eq!(
            set_cookie("__Host-x", "v", None, "Strict"),
            "__Host-x=v; Path=/; Secure; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn policies() {
        let p = csp("body{}", Some("x()"), Some(&["'self'".into()]));
        assert!(p.contains("style-src 'sha256-") && p.contains("script-src 'sha256-"));
        assert!(p.contains("form-action 'self'") && p.contains("frame-ancestors 'none'"));
        assert!(!p.contains("unsafe"));
        assert!(csp("a", None, Some(&[])).contains("form-action 'none'"));
        assert!(!csp("a", None, None).contains("form-action"));
    }
}
