//! What the person sees: the code page, the approval page and the answers,
//! plain HTML without JavaScript, with CSRF-checked forms.

use super::*;

// ------------------------------------------------------------------ pages

/// The web sign-in pages, mounted outside `/api` (browsers send no
/// `Infra-Version`).
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/device", get(enter_page).post(submit_code))
        .route("/device/confirm", get(confirm_page).post(confirm))
        .route("/login/callback", get(callback))
}

pub(super) const STYLE: &str = "\
:root{color-scheme:light}\
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f3f4f6;color:#1f2937}\
main{max-width:28rem;margin:8vh auto;background:#fff;border:1px solid #e5e7eb;border-radius:12px;\
padding:2rem 2.25rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}\
.brand{font-weight:700;letter-spacing:.08em;color:#6b7280;margin:0 0 1.25rem;font-size:.8rem;text-transform:uppercase}\
h1{font-size:1.35rem;margin:0 0 .75rem}\
p{line-height:1.5;margin:.6rem 0}\
label{display:block;font-weight:600;margin:1.25rem 0 .4rem}\
input[type=text]{box-sizing:border-box;width:100%;font:600 1.6rem ui-monospace,Menlo,Consolas,monospace;\
letter-spacing:.15em;text-align:center;text-transform:uppercase;padding:.6rem;border:2px solid #d1d5db;border-radius:8px}\
input[type=text]:focus{outline:none;border-color:#2563eb}\
.code{font:700 2rem ui-monospace,Menlo,Consolas,monospace;letter-spacing:.15em;text-align:center;\
background:#f3f4f6;border-radius:8px;padding:.75rem;margin:1rem 0}\
.actions{display:flex;gap:.75rem;margin-top:1.5rem}\
button{flex:1;font:600 1rem system-ui,sans-serif;padding:.75rem 1rem;border-radius:8px;border:1px solid transparent;cursor:pointer}\
.primary{background:#2563eb;color:#fff}\
.secondary{background:#fff;color:#1f2937;border-color:#d1d5db}\
.error{background:#fef2f2;border:1px solid #fecaca;color:#991b1b;border-radius:8px;padding:.75rem 1rem}\
.warn{background:#fffbeb;border:1px solid #fde68a;color:#78350f;border-radius:8px;padding:.75rem 1rem;font-size:.95rem}\
.muted{color:#6b7280;font-size:.9rem}\
dl{display:grid;grid-template-columns:auto 1fr;gap:.35rem 1rem;margin:1rem 0}\
dt{color:#6b7280}dd{margin:0;font-weight:600;word-break:break-all}\
a{color:#2563eb}";

/// No scripts, no framing, no base tag, styles only from the hash of ours.
/// No `form-action`: the code form's answer redirects to the identity
/// provider, and Chrome checks a form's redirects against it.
pub(super) static CSP: LazyLock<String> =
    LazyLock::new(|| crate::server::pages::csp(STYLE, None, None));

pub(super) fn document(title: &str, main: &str) -> String {
    crate::web::document(
        title,
        STYLE,
        &format!("<main><p class=\"brand\">infra</p>{main}</main>"),
    )
}

pub(super) fn html(status: StatusCode, title: &str, main: &str, cookies: &[String]) -> Response {
    crate::server::pages::html(status, document(title, main), &CSP, "no-referrer", cookies)
}

pub(super) fn see_other(location: &str, cookies: &[String]) -> Response {
    crate::server::pages::see_other(location, &CSP, "no-referrer", cookies)
}

/// A page that says what went wrong and how to start again.
pub(super) fn problem(status: StatusCode, title: &str, message: &str) -> Response {
    let mut resp = html(
        status,
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>\
             <p><a href=\"/device\">Enter a code again</a></p>",
            html_escape(title),
            html_escape(message)
        ),
        &[],
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        // The caller sets the real value; a minute is a safe default.
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    resp
}

/// An API error as a page, keeping its status and Retry-After.
pub(super) fn error_page(e: ApiError) -> Response {
    let title = match e.status {
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "Sign-in failed",
        StatusCode::BAD_GATEWAY => "Your identity provider could not be reached",
        s if s.is_server_error() => "Something went wrong",
        _ => "Sign-in failed",
    };
    let mut resp = problem(e.status, title, &e.message);
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A cookie of ours, if it has the shape of our tokens.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    crate::server::pages::cookie(headers, name).filter(|v| is_token(v))
}

/// The CSRF token for a form: the browser's, or a new one with its cookie.
pub(super) fn csrf_for(headers: &HeaderMap) -> (String, Vec<String>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(t) => (t, Vec::new()),
        None => {
            let t = random_token();
            let c = crate::server::pages::set_cookie(CSRF_COOKIE, &t, None, "Strict");
            (t, vec![c])
        }
    }
}

/// Double submit: the form's token must equal the cookie's.
pub(super) fn csrf_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    match (cookie(headers, CSRF_COOKIE), form.get("csrf")) {
        (Some(c), Some(f)) => ct_eq(&c, f),
        _ => false,
    }
}

pub(super) fn csrf_refused() -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form was not sent from this server's own page (its security token is missing or \
         wrong), so nothing was done. Open the page again and retry.",
    )
}

/// Whether this browser is the one that started the sign-in.
pub(super) fn same_browser(headers: &HeaderMap, signin: &DeviceSigninRow) -> bool {
    cookie(headers, BROWSER_COOKIE).is_some_and(|b| ct_eq(&hash_secret(&b), &signin.binding_hash))
}

pub(super) fn code_form(
    headers: &HeaderMap,
    status: StatusCode,
    prefill: &str,
    error: &str,
) -> Response {
    let (csrf, cookies) = csrf_for(headers);
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            html_escape(error)
        )
    };
    let main = format!(
        "<h1>Sign in a device</h1>\
         <p>Enter the code that <code>infra login --device</code> shows in your terminal.</p>\
         {error}\
         <form method=\"post\" action=\"/device\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"user_code\">Code</label>\
         <input type=\"text\" id=\"user_code\" name=\"user_code\" value=\"{prefill}\" \
         placeholder=\"XXXX-XXXX\" maxlength=\"20\" autocomplete=\"off\" autocapitalize=\"characters\" \
         spellcheck=\"false\" required autofocus>\
         <div class=\"actions\"><button class=\"primary\" type=\"submit\">Continue</button></div>\
         </form>\
         <p class=\"muted\">Next you sign in with your identity provider. The device gets \
         nothing until you approve it on the following page.</p>",
        prefill = html_escape(prefill),
    );
    html(status, "Sign in a device", &main, &cookies)
}

/// `GET /device[?user_code=]`: asks for the code.
pub(super) async fn enter_page(
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let prefill = q
        .get("user_code")
        .map(|c| match normalize_user_code(c) {
            Some(n) => format_user_code(&n),
            None => c.chars().take(20).collect(),
        })
        .unwrap_or_default();
    code_form(&headers, StatusCode::OK, &prefill, "")
}

/// `POST /device`: checks the code and sends the browser to the provider.
pub(super) async fn submit_code(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_ok(&headers, &form) {
        return csrf_refused();
    }
    let typed = form.get("user_code").map(String::as_str).unwrap_or("");
    match begin_signin(&state, &addr, &headers, typed).await {
        Ok(resp) => resp,
        Err(e) => error_page(e),
    }
}

/// The sign-in of this browser that waits for approve or deny.
pub(super) async fn waiting_signin(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> ApiResult<(DeviceSigninRow, DeviceCodeRow)> {
    let signin = state.store.get_device_signin(id).await?.ok_or_else(|| {
        ApiError::bad_request("This sign-in is not known. Enter the code from your terminal again.")
    })?;
    if !same_browser(headers, &signin) {
        return Err(ApiError::forbidden(
            "This sign-in was started in another browser. Enter the code from your terminal \
             again, in this browser.",
        ));
    }
    match signin.status.as_str() {
        "authenticated" => {}
        "done" => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "You already answered for this code.",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "This sign-in did not finish. Enter the code from your terminal again.",
            ));
        }
    }
    if signin.expires_at <= store::now() {
        return Err(ApiError::bad_request(
            "This sign-in took too long. Enter the code from your terminal again.",
        ));
    }
    let code = state.store.get_device_code(&signin.device_code_id).await?;
    still_open(&code)?;
    Ok((signin, code))
}

pub(super) fn ago(secs: i64) -> String {
    match secs {
        s if s < 60 => "just now".to_string(),
        s if s < 120 => "a minute ago".to_string(),
        s => format!("{} minutes ago", s / 60),
    }
}

/// `GET /device/confirm?attempt=ID`: approve or deny?
pub(super) async fn confirm_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let id = q.get("attempt").map(String::as_str).unwrap_or("");
    let result = async {
        let (signin, code) = waiting_signin(&state, &headers, id).await?;
        let user = state
            .store
            .get_user(signin.user_id.as_deref().unwrap_or_default())
            .await?;
        let provider = state.store.get_provider(&code.provider_id).await?;
        Ok::<_, ApiError>((signin, code, user, provider))
    }
    .await;
    let (signin, code, user, provider) = match result {
        Ok(v) => v,
        Err(e) => return error_page(e),
    };
    let now = store::now();
    let (csrf, cookies) = csrf_for(&headers);
    let left = (code.expires_at - now).max(0);
    let main = format!(
        "<h1>Approve this sign-in?</h1>\
         <p>You are signed in as <strong>{user}</strong> through {provider}.</p>\
         <p>A device asks to use infra as you. It shows this code:</p>\
         <p class=\"code\" id=\"user-code\">{code}</p>\
         <dl><dt>Requested from</dt><dd>{from}</dd><dt>Requested</dt><dd>{when}</dd>\
         <dt>Code expires in</dt><dd>{left}</dd></dl>\
         <p class=\"warn\">Approve only if you started <code>infra login --device</code> yourself \
         and your terminal shows the same code. The device will reach everything you can \
         reach.</p>\
         <form method=\"post\" action=\"/device/confirm\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"attempt\" value=\"{attempt}\">\
         <div class=\"actions\">\
         <button class=\"primary\" type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button class=\"secondary\" type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\
         </div></form>",
        user = html_escape(&user.name),
        provider = html_escape(&provider.name),
        code = html_escape(&format_user_code(&code.user_code)),
        from = html_escape(&code.client_addr),
        when = ago(now - code.created_at_ms / 1000),
        left = if left >= 120 {
            format!("{} minutes", left / 60)
        } else {
            format!("{left} seconds")
        },
        attempt = html_escape(&signin.id),
    );
    html(StatusCode::OK, "Approve this sign-in?", &main, &cookies)
}

/// `POST /device/confirm`: the answer.
pub(super) async fn confirm(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_ok(&headers, &form) {
        return csrf_refused();
    }
    let approve = match form.get("decision").map(String::as_str) {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "No answer",
                "Choose Approve or Deny.",
            );
        }
    };
    let id = form.get("attempt").map(String::as_str).unwrap_or("");
    match decide(&state, &addr, &headers, id, approve).await {
        Ok(resp) => resp,
        Err(e) => error_page(e),
    }
}

pub(super) async fn decide(
    state: &AppState,
    addr: &str,
    headers: &HeaderMap,
    id: &str,
    approve: bool,
) -> ApiResult<Response> {
    let (signin, code) = waiting_signin(state, headers, id).await?;
    let user_id = signin.user_id.clone().unwrap_or_default();
    if !state
        .store
        .advance_device_signin(&signin.id, "authenticated", "done", None, None)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "You already answered for this code.",
        ));
    }
    if !state
        .store
        .decide_device_code(&code.id, approve, &user_id, signin.auth_time, store::now())
        .await?
    {
        // Someone else answered first, or it just expired.
        let now = state.store.get_device_code(&code.id).await?;
        still_open(&now)?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "This code was already answered.",
        ));
    }
    let user = state.store.get_user(&user_id).await?;
    state
        .store
        .audit(&AuditEntry {
            actor: &user.name,
            action: if approve {
                "device.approve"
            } else {
                "device.deny"
            },
            target: &format!("device:{}", code.id),
            result: "success",
            remote_addr: addr,
            detail: &format!("requested from {}", code.client_addr),
        })
        .await?;
    let shown = html_escape(&format_user_code(&code.user_code));
    Ok(if approve {
        html(
            StatusCode::OK,
            "Device signed in",
            &format!(
                "<h1>Device signed in</h1>\
                 <p>The device showing <strong>{shown}</strong> is now signed in as \
                 <strong>{}</strong>. It receives its own access key directly from the server.</p>\
                 <p>You can close this tab and go back to your terminal.</p>",
                html_escape(&user.name)
            ),
            &[],
        )
    } else {
        html(
            StatusCode::OK,
            "Sign-in denied",
            &format!(
                "<h1>Sign-in denied</h1>\
                 <p>The device showing <strong>{shown}</strong> was not signed in. It has been \
                 told so.</p><p>You can close this tab.</p>"
            ),
            &[],
        )
    })
}
