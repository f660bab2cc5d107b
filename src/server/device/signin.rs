//! The round trip through the identity provider: the code checked, the
//! browser sent to the provider with state, nonce and PKCE, and its answer
//! at the server's callback exchanged like `POST /api/login`'s.

use super::*;

pub(super) async fn begin_signin(
    state: &AppState,
    addr: &str,
    headers: &HeaderMap,
    typed: &str,
) -> ApiResult<Response> {
    let now_ms = store::now_ms();
    if let Some(until) = WRONG_CODES.held_until(&state.store, addr).await? {
        let secs = ((until - now_ms + 999) / 1000).max(1) as u64;
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many wrong codes were entered from your address. Try again in {} minutes.",
                secs.div_ceil(60)
            ),
        );
        err.retry_after = Some(secs);
        return Err(err);
    }
    let shown: String = typed.trim().chars().take(20).collect();
    let found = match normalize_user_code(typed) {
        Some(n) => state.store.find_device_code_by_user_code(&n).await?,
        None => None,
    };
    let Some(code) = found else {
        WRONG_CODES.hit(&state.store, addr).await?;
        state
            .store
            .audit_repeated(
                &AuditEntry {
                    actor: "anonymous",
                    action: "device.verify",
                    target: "device",
                    result: "failure",
                    remote_addr: &ratelimit::source(addr),
                    detail: "wrong user code",
                },
                ratelimit::AUDIT_REPEAT_WINDOW_MS,
            )
            .await?;
        return Ok(code_form(
            headers,
            StatusCode::BAD_REQUEST,
            &shown,
            "That code is not right. Check the code in your terminal (8 letters, like BCDF-GHJK) \
             and type it again.",
        ));
    };
    let now = now_ms / 1000;
    if code.expires_at <= now {
        return Ok(code_form(
            headers,
            StatusCode::BAD_REQUEST,
            &shown,
            "This code has expired. Run `infra login --device` again for a new one.",
        ));
    }
    if code.status != "pending" {
        return Ok(code_form(
            headers,
            StatusCode::CONFLICT,
            &shown,
            "This code was already used. Run `infra login --device` again for a new one.",
        ));
    }
    let provider = state.store.get_provider(&code.provider_id).await?;

    let oauth_state = random_token();
    let nonce = random_token();
    let verifier = random_token();
    let mut cookies = Vec::new();
    let browser = cookie(headers, BROWSER_COOKIE).unwrap_or_else(|| {
        let b = random_token();
        cookies.push(crate::server::pages::set_cookie(
            BROWSER_COOKIE,
            &b,
            Some(86400),
            "Lax",
        ));
        b
    });
    let signin_id = store::new_id();
    state
        .store
        .create_device_signin(&NewDeviceSignin {
            id: &signin_id,
            device_code_id: &code.id,
            state_hash: &hash_secret(&oauth_state),
            binding_hash: &hash_secret(&browser),
            nonce_enc: &state.root_key.encrypt(&nonce),
            verifier_enc: &state.root_key.encrypt(&verifier),
            created_at: now,
            expires_at: code.expires_at.min(now + SIGNIN_TTL_SECS),
        })
        .await?;
    state
        .store
        .audit(&AuditEntry {
            actor: "anonymous",
            action: "device.verify",
            target: &format!("device:{}", code.id),
            result: "success",
            remote_addr: addr,
            detail: &format!("to provider {}", provider.name),
        })
        .await?;
    let attempt = crate::web::Attempt {
        state: oauth_state,
        nonce,
        code_verifier: verifier,
        redirect_url: state.callback_url.clone(),
        reauth: code.reauth != 0,
    };
    let scopes: Vec<String> = provider
        .scopes
        .split_whitespace()
        .map(String::from)
        .collect();
    let url = attempt
        .authorization_url(&provider.auth_url, &provider.client_id, &scopes)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(see_other(&url, &cookies))
}

/// `GET /login/callback`: the provider sends the browser back here.
pub(super) async fn callback(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // A sign-in to the web console shares this callback.
    if let Some(resp) =
        crate::server::console::finish_provider_sign_in(&state, &addr, &headers, &q).await
    {
        return resp;
    }
    match finish_signin(&state, &addr, &headers, &q).await {
        Ok(resp) => resp,
        Err(e) => error_page(e),
    }
}

pub(super) async fn finish_signin(
    state: &AppState,
    addr: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let unknown = || {
        ApiError::bad_request(
            "This sign-in link is not known, or was already used (or it was started at \
             another address of this server). Signing in to the web console: start again at \
             /ui/login. Confirming a device: enter the code from your terminal again.",
        )
    };
    let oauth_state = q
        .get("state")
        .filter(|s| !s.is_empty())
        .ok_or_else(unknown)?;
    let signin = state
        .store
        .find_device_signin_by_state(&hash_secret(oauth_state))
        .await?
        .ok_or_else(unknown)?;
    if !same_browser(headers, &signin) {
        return Err(ApiError::forbidden(
            "This sign-in was started in another browser. Enter the code from your terminal \
             again, in this browser.",
        ));
    }
    if signin.expires_at <= store::now() {
        return Err(ApiError::bad_request(
            "This sign-in took too long. Enter the code from your terminal again.",
        ));
    }
    if !state
        .store
        .advance_device_signin(&signin.id, "started", "exchanging", None, None)
        .await?
    {
        return Err(unknown());
    }
    let fail = |e: ApiError| mark_failed(state, &signin.id, e);
    if let Some(err) = q.get("error") {
        let mut why = err.clone();
        if let Some(d) = q.get("error_description").filter(|d| !d.is_empty()) {
            why.push_str(": ");
            why.push_str(d);
        }
        return Err(fail(ApiError::unauthorized(format!(
            "Your identity provider did not sign you in ({why}). The device was not signed in."
        )))
        .await);
    }
    let Some(auth_code) = q.get("code").filter(|c| !c.is_empty()) else {
        return Err(fail(ApiError::bad_request(
            "The identity provider sent no authorization code back.",
        ))
        .await);
    };
    let code = state.store.get_device_code(&signin.device_code_id).await?;
    if let Err(e) = still_open(&code) {
        return Err(fail(e).await);
    }
    let provider = state.store.get_provider(&code.provider_id).await?;
    let nonce = state.root_key.decrypt(&signin.nonce_enc)?;
    let verifier = state.root_key.decrypt(&signin.verifier_enc)?;
    use secrecy::ExposeSecret;
    let user = match auth::sign_in_with_provider(
        state,
        addr,
        &provider,
        auth::ProviderAnswer {
            code: auth_code,
            redirect_url: &state.callback_url,
            code_verifier: verifier.expose_secret(),
            nonce: nonce.expose_secret(),
            reauth: code.reauth != 0,
        },
    )
    .await
    {
        Ok(signed_in) => signed_in,
        Err(e) => return Err(fail(e).await),
    };
    state
        .store
        .advance_device_signin(
            &signin.id,
            "exchanging",
            "authenticated",
            Some(&user.user.id),
            user.auth_time,
        )
        .await?;
    // A fresh URL without the code, so a reload asks nothing of the provider.
    Ok(see_other(
        &format!("{}/device/confirm?attempt={}", state.public_url, signin.id),
        &[],
    ))
}

/// Ends a sign-in that went wrong; passes the error on.
pub(super) async fn mark_failed(state: &AppState, id: &str, e: ApiError) -> ApiError {
    if let Err(db) = state
        .store
        .advance_device_signin(id, "exchanging", "failed", None, None)
        .await
    {
        tracing::warn!("cannot mark a device sign-in as failed: {db}");
    }
    e
}

/// A device code that can still be approved, or why not.
pub(super) fn still_open(code: &DeviceCodeRow) -> ApiResult<()> {
    if code.status != "pending" {
        let what = match code.status.as_str() {
            "denied" => "was denied",
            _ => "was already approved",
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "This code {what}. Run `infra login --device` again if you need a new sign-in."
            ),
        ));
    }
    if code.expires_at <= store::now() {
        return Err(ApiError::bad_request(
            "This code has expired. Run `infra login --device` again for a new one.",
        ));
    }
    Ok(())
}
