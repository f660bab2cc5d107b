//! The JSON API of the device flow: `POST /api/device` starts a sign-in,
//! `POST /api/device/status` is polled until it ends.

use super::*;

// ------------------------------------------------------------------ API

#[utoipa::path(post, path = "/api/device", tag = "auth",
    request_body = DeviceAuthorizationRequest,
    responses(
        (status = 201, description = "A new device code and the user code to type at verificationURI",
         body = DeviceAuthorization),
        (status = 400, description = "No provider, an unknown one, or several and none chosen",
         body = crate::api::ErrorResponse),
        (status = 429, description = "Too many device codes from this address; see Retry-After",
         body = crate::api::ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<DeviceAuthorization>)> {
    let req: DeviceAuthorizationRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DeviceAuthorizationRequest::default()
    } else {
        parse_json(&body)?
    };
    let now_ms = store::now_ms();
    if let Some(until) = CREATIONS.held_until(&state.store, &addr).await? {
        return Err(ratelimit::too_many(
            "too many device sign-ins from this address",
            until,
            now_ms,
        ));
    }
    let provider = choose_provider(&state, req.provider_id.as_deref()).await?;

    let now = now_ms / 1000;
    // Old codes go now and then; any replica may do it.
    state
        .store
        .delete_stale_device_codes(now - KEEP_EXPIRED_SECS)
        .await?;
    let ttl = state.device_code_ttl.as_secs().max(1) as i64;
    let interval = state.device_poll_interval.as_secs().max(1) as i64;
    let device_code = random_token();
    let device_code_hash = hash_secret(&device_code);
    let id = store::new_id();
    let mut user_code = new_user_code();
    let mut tries = 0;
    loop {
        let new = NewDeviceCode {
            id: &id,
            device_code_hash: &device_code_hash,
            user_code: &user_code,
            provider_id: &provider.id,
            client_addr: &addr,
            poll_interval: interval,
            created_at_ms: now_ms,
            expires_at: now + ttl,
            reauth: req.reauth,
        };
        match state.store.create_device_code(&new).await {
            Ok(()) => break,
            Err(StoreError::Conflict(_)) if tries < 5 => {
                tries += 1;
                user_code = new_user_code();
            }
            Err(e) => return Err(e.into()),
        }
    }
    CREATIONS.hit(&state.store, &addr).await?;
    // Anyone may do this: one entry per source, provider and hour, counted.
    state
        .store
        .audit_repeated(
            &AuditEntry {
                actor: "anonymous",
                action: "device.create",
                target: "device",
                result: "success",
                remote_addr: &ratelimit::source(&addr),
                detail: &format!("provider {}", provider.name),
            },
            ratelimit::AUDIT_REPEAT_WINDOW_MS,
        )
        .await?;
    let shown = format_user_code(&user_code);
    let verification_uri = format!("{}/device", state.public_url);
    Ok((
        StatusCode::CREATED,
        Json(DeviceAuthorization {
            device_code: device_code.into(),
            verification_uri_complete: format!("{verification_uri}?user_code={shown}"),
            verification_uri,
            user_code: shown,
            expires_in: ttl as u64,
            interval: interval as u64,
        }),
    ))
}

/// The provider asked for, or the only one.
pub(super) async fn choose_provider(state: &AppState, id: Option<&str>) -> ApiResult<ProviderRow> {
    if let Some(id) = id {
        return match state.store.get_provider(id).await {
            Ok(p) => Ok(p),
            Err(StoreError::NotFound(_)) => Err(ApiError::field(
                "providerID",
                "no such provider; see GET /api/providers",
            )),
            Err(e) => Err(e.into()),
        };
    }
    let mut all = state
        .store
        .list_providers(None, PageRequest::all())
        .await?
        .items;
    match all.len() {
        0 => Err(ApiError::field(
            "providerID",
            "this server has no identity provider to sign in with; log in with \
             `infra login SERVER --key KEY` or `--user NAME`, or ask an admin to add one",
        )),
        1 => Ok(all.remove(0)),
        _ => {
            let names: Vec<String> = all
                .iter()
                .map(|p| format!("{} (id {})", p.name, p.id))
                .collect();
            Err(ApiError::field(
                "providerID",
                format!(
                    "this server has several identity providers; choose one: {}",
                    names.join(", ")
                ),
            ))
        }
    }
}

#[utoipa::path(post, path = "/api/device/status", tag = "auth",
    request_body = DeviceStatusRequest,
    responses(
        (status = 200, description = "Where the sign-in stands: `status` is authorization_pending, \
          slow_down, approved (with accessKey, userID, name, expires), access_denied, \
          expired_token or invalid_grant (unknown or already used)", body = DeviceStatusResponse),
        (status = 400, description = "Malformed request", body = crate::api::ErrorResponse)))]
pub async fn status(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<DeviceStatusRequest>,
) -> ApiResult<Json<DeviceStatusResponse>> {
    let default_interval = state.device_poll_interval.as_secs().max(1);
    let answer = |status, message: &str, interval: u64| DeviceStatusResponse {
        status,
        message: message.to_string(),
        interval,
        user_id: None,
        name: None,
        access_key: None,
        expires: None,
    };
    let Some(code) = state
        .store
        .find_device_code_by_hash(&hash_secret(
            secrecy::ExposeSecret::expose_secret(&req.device_code).trim(),
        ))
        .await?
    else {
        return Ok(Json(answer(
            DeviceStatus::InvalidGrant,
            "this device code is not known (or expired long ago); run `infra login SERVER \
             --device` again",
            default_interval,
        )));
    };
    let interval = code.poll_interval.max(1) as u64;
    let now_ms = store::now_ms();
    let expired = code.expires_at <= now_ms / 1000;
    match code.status.as_str() {
        "consumed" => {
            return Ok(Json(answer(
                DeviceStatus::InvalidGrant,
                "this device code was already used to sign in; run `infra login SERVER \
                 --device` again",
                interval,
            )));
        }
        "denied" => {
            return Ok(Json(answer(
                DeviceStatus::AccessDenied,
                "the sign-in was denied in the browser",
                interval,
            )));
        }
        _ if expired => {
            return Ok(Json(answer(
                DeviceStatus::ExpiredToken,
                "the code expired before the sign-in was approved",
                interval,
            )));
        }
        "approved" => return approved(&state, &addr, &code, interval).await.map(Json),
        _ => {}
    }
    // Pending. A device that asks sooner than its interval allows must
    // slow down, for this and every later poll. A little slack (a fifth of
    // the interval, at most a second) absorbs clock differences between
    // replicas; a device that waits the interval after each answer never
    // comes closer than the interval.
    let interval_ms = code.poll_interval.max(1) * 1000;
    let slack_ms = (interval_ms / 5).min(1000);
    let too_soon = code.last_poll_ms > 0 && now_ms - code.last_poll_ms < interval_ms - slack_ms;
    let next = if too_soon {
        code.poll_interval.max(1) + SLOW_DOWN_STEP_SECS
    } else {
        code.poll_interval.max(1)
    };
    state
        .store
        .record_device_poll(&code.id, now_ms, next)
        .await?;
    if too_soon {
        state
            .store
            .audit(&AuditEntry {
                actor: "anonymous",
                action: "device.poll",
                target: &format!("device:{}", code.id),
                result: "slow_down",
                remote_addr: &addr,
                detail: &format!("polled too often; interval now {next} s"),
            })
            .await?;
        return Ok(Json(answer(
            DeviceStatus::SlowDown,
            &format!("polled too often; wait {next} seconds between polls"),
            next as u64,
        )));
    }
    Ok(Json(answer(
        DeviceStatus::AuthorizationPending,
        "",
        interval,
    )))
}

/// The first poll after approval: the code is used up and the device gets
/// a new access key, made now and shown to nobody else.
pub(super) async fn approved(
    state: &AppState,
    addr: &str,
    code: &DeviceCodeRow,
    interval: u64,
) -> ApiResult<DeviceStatusResponse> {
    let used = |message: &str| DeviceStatusResponse {
        status: DeviceStatus::InvalidGrant,
        message: message.to_string(),
        interval,
        user_id: None,
        name: None,
        access_key: None,
        expires: None,
    };
    let Some(user_id) = code.user_id.as_deref() else {
        return Err(ApiError::internal("an approved device code without a user"));
    };
    if !state.store.consume_device_code(&code.id).await? {
        return Ok(used(
            "this device code was already used to sign in; run `infra login SERVER --device` again",
        ));
    }
    let user = match state.store.get_user(user_id).await {
        Ok(u) => u,
        Err(StoreError::NotFound(_)) => {
            return Ok(used(
                "the user who approved this sign-in no longer exists; sign in again",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // The key stands on the provider session the person just signed in with.
    let cap = state
        .store
        .get_provider_user(&code.provider_id, &user.id)
        .await?
        .map(|l| l.session_expires_at)
        .filter(|&t| t > 0);
    let login = auth::issue_login_key(
        state,
        "user",
        &user.id,
        &user.name,
        cap,
        Some(&code.provider_id),
        code.auth_time,
    )
    .await?;
    state.store.touch_user(&user.id).await?;
    auth::succeed(state, "device", &user.name, addr).await?;
    Ok(DeviceStatusResponse {
        status: DeviceStatus::Approved,
        message: format!("signed in as {}", user.name),
        interval,
        user_id: Some(login.user_id),
        name: Some(login.name),
        access_key: Some(login.access_key),
        expires: Some(login.expires),
    })
}
