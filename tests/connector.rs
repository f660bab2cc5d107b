//! `infra connector` in front of a loopback stand-in for a cluster's API
//! server (there is no kube-apiserver here): the stand-in records what it
//! receives and answers like the API server for the calls used. Users'
//! requests go through the real `kubectl` with cluster tokens from the real
//! `infra server`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use common::{Backend, Server, ServerOptions, free_port};
use serde_json::{Value, json};

/// What the stand-in saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Cluster {
    seen: Vec<Seen>,
    /// "" for cluster-scoped bindings, else the namespace.
    bindings: BTreeMap<(String, String), Value>,
    /// Namespaces that exist; RoleBindings elsewhere are refused (404).
    namespaces: std::collections::BTreeSet<String>,
    /// What SubjectAccessReviews allow: (user, verb, resource, name).
    allowed: Vec<(String, String, String, String)>,
    /// Every SubjectAccessReview asked.
    reviews: Vec<Value>,
    next_version: u64,
    /// Answer 401 to the connector's own token, as for a revoked one.
    refuse_connector: bool,
    /// Refuse the connector's impersonation (its ClusterRole lacks it).
    refuse_impersonation: bool,
    /// (path, HTTP version) of every request.
    versions: Vec<(String, String)>,
    /// (kind, label selector) of every list of bindings.
    lists: Vec<(String, String)>,
}

#[derive(Clone)]
struct StandIn {
    state: Arc<Mutex<Cluster>>,
    token_file: std::path::PathBuf,
    /// The connector authenticates with a client certificate (checked in
    /// TLS), and no request may carry an Authorization header.
    mtls: bool,
}

/// A failure as the API server words it (its reason follows the code).
fn k8s_status(code: StatusCode, msg: &str) -> Response {
    let reason = match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "AlreadyExists",
        422 => "Invalid",
        _ => "InternalError",
    };
    (code, axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": msg, "reason": reason, "code": code.as_u16()}))).into_response()
}

/// Records the request and checks the connector's own credentials.
fn admit(s: &StandIn, path: &str, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let seen = Seen {
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
    };
    let (refuse, no_impersonation) = {
        let mut st = s.state.lock().unwrap();
        st.seen.push(seen);
        (st.refuse_connector, st.refuse_impersonation)
    };
    if refuse {
        return Err(Box::new(k8s_status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
        )));
    }
    if no_impersonation && let Some(user) = headers.get("impersonate-user") {
        return Err(Box::new(k8s_status(
            StatusCode::FORBIDDEN,
            &format!(
                "users \"{}\" is forbidden: User \"system:serviceaccount:infra:infra-connector\" \
                 cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
                user.to_str().unwrap_or_default()
            ),
        )));
    }
    if s.mtls {
        // TLS checked the client certificate; a bearer token here would be
        // a user's infra token leaking to the cluster.
        if headers.contains_key("authorization") {
            return Err(Box::new(k8s_status(
                StatusCode::UNAUTHORIZED,
                "an Authorization header besides the client certificate",
            )));
        }
        return Ok(());
    }
    let want = format!(
        "Bearer {}",
        std::fs::read_to_string(&s.token_file).unwrap().trim()
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        return Err(Box::new(k8s_status(
            StatusCode::UNAUTHORIZED,
            "not the connector's service-account token",
        )));
    }
    Ok(())
}

/// Any other path, as the API server's /healthz, /livez, /readyz or /metrics.
async fn anything(State(s): State<StandIn>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if let Err(r) = admit(&s, &path, req.headers()) {
        return *r;
    }
    // A pod behind the API server's proxy that wants its own login.
    if path.ends_with("/proxy/private") {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"web\"")],
            "log in to web first",
        )
            .into_response();
    }
    "ok".into_response()
}

async fn record_version(
    State(s): State<StandIn>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    s.state
        .lock()
        .unwrap()
        .versions
        .push((req.uri().path().to_string(), format!("{:?}", req.version())));
    next.run(req).await
}

async fn version(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, "/version", &headers) {
        return *r;
    }
    axum::Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-standin", "platform": "linux/amd64"})).into_response()
}

async fn pods(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = admit(&s, "/api/v1/namespaces/default/pods", &headers) {
        return *r;
    }
    let pod = |name: &str| json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"}});
    if q.get("watch").map(String::as_str) == Some("true") {
        // A watch: events arrive one by one, with pauses, over a chunked stream.
        let events = vec![
            json!({"type": "ADDED", "object": pod("web-1")}),
            json!({"type": "MODIFIED", "object": pod("web-2")}),
        ];
        // `-l app=long`: a watch that stays open after its events.
        let forever = q
            .get("labelSelector")
            .is_some_and(|l| l.contains("app=long"));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::new(Events::new(events, forever)))
            .unwrap();
    }
    axum::Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": [pod("web-1"), pod("web-2")]})).into_response()
}

/// Watch events, one frame each, a pause apart (as a slow API server
/// sends them): the first at once, each next one a tick of `pace` later.
struct Events {
    events: Vec<Value>,
    pace: tokio::time::Interval,
    /// Stay open after the last event, as a watch does.
    forever: bool,
}

impl Events {
    fn new(mut events: Vec<Value>, forever: bool) -> Events {
        events.reverse();
        Events {
            events,
            forever,
            // real time: a stream that arrives in pieces, which the
            // connector must pass on as they come (no clock involved).
            pace: tokio::time::interval(Duration::from_millis(300)),
        }
    }
}

impl http_body::Body for Events {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        if self.pace.poll_tick(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        match self.events.pop() {
            Some(e) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(
                bytes::Bytes::from(format!("{e}\n")),
            )))),
            None if self.forever => std::task::Poll::Pending,
            None => std::task::Poll::Ready(None),
        }
    }
}

async fn discovery_api(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, "/api", &headers) {
        return *r;
    }
    axum::Json(json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}))
    .into_response()
}

async fn discovery_apis(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, "/apis", &headers) {
        return *r;
    }
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})).into_response()
}

async fn discovery_v1(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, "/api/v1", &headers) {
        return *r;
    }
    axum::Json(
        json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": ["get", "list", "watch"], "shortNames": ["po"]},
            {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions",
             "verbs": ["create", "get"]}
        ]}),
    )
    .into_response()
}

async fn one_pod(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, "/api/v1/namespaces/default/pods/web-1", &headers) {
        return *r;
    }
    axum::Json(json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "1"},
        "spec": {"containers": [{"name": "app", "image": "example/app"}]},
        "status": {"phase": "Running"}}))
    .into_response()
}

/// `kubectl logs -f`: a line every 100 ms, for as long as the client reads.
async fn logs(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, "/api/v1/namespaces/default/pods/web-1/log", &headers) {
        return *r;
    }
    let lines = futures::stream::unfold(0u64, |i| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(format!("log line {i}\n"))),
            i + 1,
        ))
    });
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(lines))
        .unwrap()
}

/// `kubectl exec` over WebSocket (the v5.channel.k8s.io framing: one
/// channel byte, then data): answers the command's arguments on stdout and
/// a success status.
async fn exec(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    if let Err(r) = admit(&s, "/api/v1/namespaces/default/pods/web-1/exec", &headers) {
        return *r;
    }
    let words: Vec<String> = q
        .into_iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v)
        .collect();
    ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |mut socket| async move {
            use axum::extract::ws::Message;
            if words == ["cat"] {
                // An interactive session: stdin (channel 0) comes back on
                // stdout (1) until the client closes stdin (255 0) or goes.
                while let Some(Ok(m)) = socket.recv().await {
                    match m {
                        Message::Binary(b) if b.first() == Some(&0) => {
                            let mut out = vec![1u8];
                            out.extend_from_slice(&b[1..]);
                            if socket.send(Message::Binary(out.into())).await.is_err() {
                                return;
                            }
                        }
                        Message::Binary(b) if b.first() == Some(&255) => break,
                        Message::Close(_) => return,
                        _ => {}
                    }
                }
                let status = b"\x03{\"metadata\":{},\"status\":\"Success\"}".to_vec();
                let _ = socket.send(Message::Binary(status.into())).await;
                goodbye(socket).await;
                return;
            }
            if words.first().map(String::as_str) == Some("exit") {
                // `exit N`: a line on stdout, one on stderr, then exit code N.
                let code: u32 = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(1);
                let _ = socket
                    .send(Message::Binary(b"\x01bye \xe2\x9c\x93\n".to_vec().into()))
                    .await;
                let _ = socket
                    .send(Message::Binary(b"\x02warning\n".to_vec().into()))
                    .await;
                let status = json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                    "message": format!("command terminated with non-zero exit code: {code}"),
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}});
                let mut frame = vec![3u8];
                frame.extend_from_slice(status.to_string().as_bytes());
                let _ = socket.send(Message::Binary(frame.into())).await;
                goodbye(socket).await;
                return;
            }
            if words.first().map(String::as_str) == Some("flood") {
                // `flood`: output, a line every 10 ms, until the client goes.
                for i in 0.. {
                    let line = format!("\x01line {i} of a long output\n");
                    if socket.send(Message::Binary(line.into_bytes().into())).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let mut out = vec![1u8];
            out.extend_from_slice(format!("ran {} in the stand-in\n", words.join(" ")).as_bytes());
            let _ = socket.send(Message::Binary(out.into())).await;
            let mut status = vec![3u8];
            status.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
            let _ = socket.send(Message::Binary(status.into())).await;
            let _ = socket
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
            // Wait for the client's close before going away.
            while let Some(Ok(m)) = socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
}

/// Closes an exec's WebSocket as the API server does: a normal closure,
/// then the client's own close awaited.
async fn goodbye(mut socket: axum::extract::ws::WebSocket) {
    use axum::extract::ws::{CloseFrame, Message};
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    while let Some(Ok(m)) = socket.recv().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
}

/// An upgrade that echoes bytes (like exec's stream, without SPDY framing).
async fn echo(State(s): State<StandIn>, mut req: Request) -> Response {
    if let Err(r) = admit(&s, "/echo", req.headers()) {
        return *r;
    }
    if req.headers().get("upgrade").is_none() {
        return k8s_status(StatusCode::BAD_REQUEST, "upgrade required");
    }
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(io) = on.await {
            let io = hyper_util::rt::TokioIo::new(io);
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "echo")
        .body(Body::empty())
        .unwrap()
}

/// Whether a binding's labels meet a `labelSelector` of `k=v` requirements.
fn selected(v: &Value, selector: Option<&String>) -> bool {
    selector.is_none_or(|sel| {
        sel.split(',').filter(|r| !r.is_empty()).all(|req| {
            let (k, want) = req.split_once('=').expect("the stand-in knows only k=v");
            v["metadata"]["labels"][k] == want
        })
    })
}

async fn list_bindings(
    State(s): State<StandIn>,
    headers: HeaderMap,
    kind: &str,
    ns: Option<String>,
    q: BTreeMap<String, String>,
) -> Response {
    if let Err(r) = admit(&s, "rbac list", &headers) {
        return *r;
    }
    let mut st = s.state.lock().unwrap();
    st.lists.push((
        kind.to_string(),
        q.get("labelSelector").cloned().unwrap_or_default(),
    ));
    let items: Vec<Value> = st
        .bindings
        .iter()
        .filter(|((n, _), v)| {
            let is_crb = n.is_empty();
            (kind == "ClusterRoleBinding") == is_crb
                && ns.as_deref().is_none_or(|want| want == n)
                && selected(v, q.get("labelSelector"))
        })
        .map(|(_, v)| v.clone())
        .collect();
    axum::Json(json!({"kind": format!("{kind}List"), "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"resourceVersion": "1"}, "items": items})).into_response()
}

async fn create_binding(s: StandIn, headers: HeaderMap, ns: String, mut body: Value) -> Response {
    if let Err(r) = admit(&s, "rbac create", &headers) {
        return *r;
    }
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    let mut st = s.state.lock().unwrap();
    if !ns.is_empty() && !st.namespaces.contains(&ns) {
        // As the API server's NamespaceLifecycle admission answers.
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("namespaces \"{ns}\" not found"),
                "reason": "NotFound", "details": {"name": ns, "kind": "namespaces"},
                "code": 404})),
        )
            .into_response();
    }
    if st.bindings.contains_key(&(ns.clone(), name.clone())) {
        return k8s_status(StatusCode::CONFLICT, "already exists");
    }
    st.next_version += 1;
    body["metadata"]["resourceVersion"] = json!(st.next_version.to_string());
    st.bindings.insert((ns, name), body.clone());
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn get_binding(s: StandIn, headers: HeaderMap, ns: String, name: String) -> Response {
    if let Err(r) = admit(&s, "rbac get", &headers) {
        return *r;
    }
    match s.state.lock().unwrap().bindings.get(&(ns, name)) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => k8s_status(StatusCode::NOT_FOUND, "not found"),
    }
}

/// PUT, with the API server's optimistic concurrency on resourceVersion.
async fn replace_binding(
    s: StandIn,
    headers: HeaderMap,
    ns: String,
    name: String,
    mut body: Value,
) -> Response {
    if let Err(r) = admit(&s, "rbac replace", &headers) {
        return *r;
    }
    let mut st = s.state.lock().unwrap();
    let Some(cur) = st.bindings.get(&(ns.clone(), name.clone())) else {
        return k8s_status(StatusCode::NOT_FOUND, "not found");
    };
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
        && cur["metadata"]["resourceVersion"].as_str() != Some(rv)
    {
        return k8s_status(StatusCode::CONFLICT, "the object has been modified");
    }
    if cur["roleRef"] != body["roleRef"] {
        return k8s_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "roleRef: Invalid value: cannot change roleRef",
        );
    }
    st.next_version += 1;
    body["metadata"]["resourceVersion"] = json!(st.next_version.to_string());
    st.bindings.insert((ns, name), body.clone());
    axum::Json(body).into_response()
}

/// SubjectAccessReview, answered from the stand-in's `allowed` list.
async fn access_review(
    State(s): State<StandIn>,
    headers: HeaderMap,
    axum::Json(mut review): axum::Json<Value>,
) -> Response {
    if let Err(r) = admit(&s, "subjectaccessreviews", &headers) {
        return *r;
    }
    let spec = review["spec"].clone();
    let a = &spec["resourceAttributes"];
    let mut st = s.state.lock().unwrap();
    st.reviews.push(review.clone());
    let allowed = st.allowed.iter().any(|(u, verb, res, name)| {
        spec["user"] == json!(u)
            && a["verb"] == json!(verb)
            && a["resource"] == json!(res)
            && (name == "*" || a["name"] == json!(name))
    });
    review["status"] =
        json!({"allowed": allowed, "reason": if allowed { "" } else { "no RBAC policy matched" }});
    axum::Json(review).into_response()
}

/// SelfSubjectReview (`kubectl auth whoami`), answered as the API server
/// does: with the user it authenticated, which for an impersonated request
/// is the one the Impersonate-* headers name (plus `system:authenticated`).
/// kubectl sends the (empty) review as protobuf; the answer is JSON, which
/// its Accept header allows too.
async fn self_subject_review(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, "selfsubjectreviews", &headers) {
        return *r;
    }
    let mut review = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
    });
    let all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let Some(user) = all("impersonate-user").into_iter().next() else {
        // Not impersonated: the connector itself.
        review["status"] =
            json!({"userInfo": {"username": "system:serviceaccount:infra:connector"}});
        return (StatusCode::CREATED, axum::Json(review)).into_response();
    };
    let mut groups = all("impersonate-group");
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    let mut extra = serde_json::Map::new();
    for (name, value) in &headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
            let key = key.replace("%2f", "/").replace("%2F", "/");
            let list = extra.entry(key).or_insert_with(|| json!([]));
            list.as_array_mut()
                .unwrap()
                .push(json!(value.to_str().unwrap_or("")));
        }
    }
    let mut info = json!({"username": user, "groups": groups, "extra": extra});
    if let Some(uid) = all("impersonate-uid").into_iter().next() {
        info["uid"] = json!(uid);
    }
    review["status"] = json!({"userInfo": info});
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

async fn delete_binding(s: StandIn, headers: HeaderMap, ns: String, name: String) -> Response {
    if let Err(r) = admit(&s, "rbac delete", &headers) {
        return *r;
    }
    match s.state.lock().unwrap().bindings.remove(&(ns, name)) {
        Some(_) => axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        )
        .into_response(),
        None => k8s_status(StatusCode::NOT_FOUND, "not found"),
    }
}

struct Running {
    url: String,
    ca: std::path::PathBuf,
    /// With `start_standin_mtls`: the client certificate and key (PEM)
    /// the API server accepts.
    client: Option<(String, String)>,
    standin: StandIn,
    _dir: tempfile::TempDir,
}

async fn start_standin() -> Running {
    start_standin_with(false).await
}

/// A stand-in that admits only TLS clients with its client certificate,
/// as kind, minikube and k3d clusters' kubeconfigs authenticate.
async fn start_standin_mtls() -> Running {
    start_standin_with(true).await
}

async fn start_standin_with(mtls: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key).unwrap();
    let ca = dir.path().join("kube-ca.crt");
    std::fs::write(&ca, cert.pem()).unwrap();
    let token_file = dir.path().join("token");
    // Projected service-account tokens have no trailing newline.
    std::fs::write(&token_file, "sa-token-1").unwrap();
    let standin = StandIn {
        state: Arc::new(Mutex::new(Cluster {
            namespaces: ["default", "web", "kube-system"].map(String::from).into(),
            ..Cluster::default()
        })),
        token_file,
        mtls,
    };
    // A binding infra does not manage, which must survive.
    standin.state.lock().unwrap().bindings.insert(
        (String::new(), "cluster-admins".into()),
        json!({"metadata": {"name": "cluster-admins"}, "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}),
    );
    const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
    let app = axum::Router::new()
        .route("/version", get(version))
        .route("/api/v1/namespaces/default/pods", get(pods))
        .route("/echo", get(echo).post(echo))
        .route("/api", get(discovery_api))
        .route("/apis", get(discovery_apis))
        .route("/api/v1", get(discovery_v1))
        .route("/api/v1/namespaces/default/pods/web-1", get(one_pod))
        .route("/api/v1/namespaces/default/pods/web-1/log", get(logs))
        .route(
            "/api/v1/namespaces/default/pods/web-1/exec",
            get(exec).post(exec),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            axum::routing::post(access_review),
        )
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            axum::routing::post(self_subject_review),
        )
        .route(
            &format!("{RBAC}/clusterrolebindings"),
            get(
                |st: State<StandIn>, h: HeaderMap, Query(q): Query<BTreeMap<String, String>>| {
                    list_bindings(st, h, "ClusterRoleBinding", None, q)
                },
            )
            .post(
                |State(st): State<StandIn>, h: HeaderMap, axum::Json(b): axum::Json<Value>| {
                    create_binding(st, h, String::new(), b)
                },
            ),
        )
        .route(
            &format!("{RBAC}/clusterrolebindings/{{name}}"),
            delete(
                |State(st): State<StandIn>, h: HeaderMap, Path(name): Path<String>| {
                    delete_binding(st, h, String::new(), name)
                },
            )
            .get(
                |State(st): State<StandIn>, h: HeaderMap, Path(name): Path<String>| {
                    get_binding(st, h, String::new(), name)
                },
            )
            .put(
                |State(st): State<StandIn>,
                 h: HeaderMap,
                 Path(name): Path<String>,
                 axum::Json(b): axum::Json<Value>| {
                    replace_binding(st, h, String::new(), name, b)
                },
            ),
        )
        .route(
            &format!("{RBAC}/rolebindings"),
            get(
                |st: State<StandIn>, h: HeaderMap, Query(q): Query<BTreeMap<String, String>>| {
                    list_bindings(st, h, "RoleBinding", None, q)
                },
            ),
        )
        .route(
            &format!("{RBAC}/namespaces/{{ns}}/rolebindings"),
            axum::routing::post(
                |State(st): State<StandIn>,
                 h: HeaderMap,
                 Path(ns): Path<String>,
                 axum::Json(b): axum::Json<Value>| create_binding(st, h, ns, b),
            ),
        )
        .route(
            &format!("{RBAC}/namespaces/{{ns}}/rolebindings/{{name}}"),
            delete(
                |State(st): State<StandIn>,
                 h: HeaderMap,
                 Path((ns, name)): Path<(String, String)>| {
                    delete_binding(st, h, ns, name)
                },
            )
            .get(
                |State(st): State<StandIn>,
                 h: HeaderMap,
                 Path((ns, name)): Path<(String, String)>| {
                    get_binding(st, h, ns, name)
                },
            )
            .put(
                |State(st): State<StandIn>,
                 h: HeaderMap,
                 Path((ns, name)): Path<(String, String)>,
                 axum::Json(b): axum::Json<Value>| {
                    replace_binding(st, h, ns, name, b)
                },
            ),
        )
        .fallback(anything)
        .layer(axum::middleware::from_fn_with_state(
            standin.clone(),
            record_version,
        ))
        .with_state(standin.clone());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tls, client) = if mtls {
        let client_ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kind client CA");
        let client_ca = ca_params.self_signed(&client_ca_key).unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "kubernetes-admin");
        let client_cert = p
            .signed_by(
                &client_key,
                &rcgen::Issuer::from_params(&ca_params, &client_ca_key),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        (
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)),
            Some((client_cert.pem(), client_key.serialize_pem())),
        )
    } else {
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        )
        .await
        .unwrap();
        (tls, None)
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .unwrap()
            .serve(app.into_make_service())
            .await
            .unwrap();
    });
    Running {
        url: format!("https://127.0.0.1:{port}"),
        ca,
        client,
        standin,
        _dir: dir,
    }
}

struct ConnectorProc {
    child: Child,
    url: String,
    ca_pem: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl ConnectorProc {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The private health and metrics listener's `http://ADDR/metrics`.
    fn metrics_url(&self) -> String {
        self.log()
            .lines()
            .find_map(|l| l.strip_prefix("metrics on "))
            .expect("the connector prints its metrics address")
            .trim()
            .to_string()
    }
}

impl Drop for ConnectorProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- connector log:\n{}", self.log.lock().unwrap());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_connector(s: &Server, k: &Running, name: &str, extra: &[&str]) -> ConnectorProc {
    let cluster: Vec<std::ffi::OsString> = vec![
        "--kube-api".into(),
        k.url.clone().into(),
        "--kube-token-file".into(),
        k.standin.token_file.clone().into(),
        "--kube-ca-file".into(),
        k.ca.clone().into(),
    ];
    start_connector_with(s, &s.url, name, &cluster, extra).await
}

/// A connector of `server_url` (how it names the server), reaching the
/// cluster as the `cluster` flags say.
async fn start_connector_with(
    s: &Server,
    server_url: &str,
    name: &str,
    cluster: &[std::ffi::OsString],
    extra: &[&str],
) -> ConnectorProc {
    let key = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"connector": true, "name": format!("{name}-{}", free_port()), "destination": name})),
            201,
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(common::bin());
    // One time with the server that mints its tokens.
    s.clock.apply(&mut cmd);
    let mut child = cmd
        .args(["connector", "--server", server_url, "--name", name])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--endpoint",
            &format!("127.0.0.1:{port}"),
        ])
        .args(cluster)
        .arg("--server-ca-file")
        .arg(s.data_dir.join("tls.crt"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--rbac-poll", "1s", "--rbac-resync", "1s", "--leeway", "0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env(
            "INFRA_CONNECTOR_ACCESS_KEY",
            key["accessKey"].as_str().unwrap(),
        )
        .env("INFRA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let acc = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            {
                let mut a = acc.lock().unwrap();
                a.push_str(&line);
                a.push('\n');
            }
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("the connector did not start:\n{}", log.lock().unwrap());
    }
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    ConnectorProc {
        child,
        url: format!("https://127.0.0.1:{port}"),
        ca_pem,
        log,
        _dir: dir,
    }
}

async fn mint(s: &Server, key: &str, dest: &str) -> String {
    let (status, t) = s
        .call(
            "POST",
            "/api/tokens",
            Some(key),
            Some(json!({"destination": dest})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

/// `program` (a kubectl) pointed at the connector with a bearer token,
/// trusting its CA (written into `dir`).
fn kubectl_command(
    program: &std::path::Path,
    c: &ConnectorProc,
    token: &str,
    dir: &std::path::Path,
) -> Command {
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, &c.ca_pem).unwrap();
    let mut cmd = Command::new(program);
    cmd.args([
        "--server",
        &c.url,
        "--token",
        token,
        "--certificate-authority",
    ])
    .arg(&ca)
    .args(["--kubeconfig", "/dev/null"]);
    cmd
}

/// Runs the real kubectl against the connector with a bearer token.
fn kubectl(c: &ConnectorProc, token: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    kubectl_command(std::path::Path::new("kubectl"), c, token, dir.path())
        .args(args)
        .output()
        .unwrap()
}

/// `kubectl get --raw /version` with `token`, which must work; what the
/// stand-in saw of it.
fn version_through(c: &ConnectorProc, k: &Running, token: &str) -> Seen {
    let out = kubectl(c, token, &["get", "--raw", "/version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    seen_last(k, "/version")
}

fn seen_last(k: &Running, path: &str) -> Seen {
    k.standin
        .state
        .lock()
        .unwrap()
        .seen
        .iter()
        .rev()
        .find(|s| s.path == path)
        .cloned()
        .expect("the stand-in saw it")
}

fn header_values(s: &Seen, name: &str) -> Vec<String> {
    s.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

async fn setup(server_args: &[&str]) -> (Server, Running, ConnectorProc, String) {
    let mut o = ServerOptions::new(Backend::Sqlite);
    o.extra_args = server_args.iter().map(|s| s.to_string()).collect();
    let s = Server::start_with(o).await;
    let k = start_standin().await;
    let c = start_connector(&s, &k, "prod", &[]).await;
    let (alice, key) = s.user_with_key("alice").await;
    let sre = s
        .ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
        .await;
    s.ok(
        "PATCH",
        &format!("/api/groups/{}/users", sre["id"].as_str().unwrap()),
        Some(json!({"usersToAdd": [alice]})),
        200,
    )
    .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": alice, "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    (s, k, c, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_through_the_connector_as_the_user() {
    let (s, k, c, key) = setup(&[]).await;

    // The destination is registered, with the connector's CA, and connected.
    let d = s.ok("GET", "/api/destinations?name=prod", None, 200).await["items"][0].clone();
    assert_eq!(d["url"], c.url);
    assert_eq!(d["ca"], c.ca_pem);
    assert_eq!(d["connected"], true);

    let token = mint(&s, &key, "prod").await;
    let out = kubectl(&c, &token, &["get", "--raw", "/version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("v1.33.0-standin"));
    let seen = seen_last(&k, "/version");
    assert_eq!(header_values(&seen, "impersonate-user"), ["alice"]);
    assert_eq!(header_values(&seen, "impersonate-group"), ["sre"]);
    assert_eq!(header_values(&seen, "authorization"), ["Bearer sa-token-1"]);
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains(&token)),
        "the user's JWT never reaches the cluster"
    );

    // A list.
    let out = kubectl(
        &c,
        &token,
        &["get", "--raw", "/api/v1/namespaces/default/pods"],
    );
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // A watch streams its events as they come.
    let out = kubectl(
        &c,
        &token,
        &["get", "--raw", "/api/v1/namespaces/default/pods?watch=true"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ADDED") && text.contains("MODIFIED"),
        "{text}"
    );

    // kubectl exec: discovery, the pod, then the WebSocket upgrade.
    let out = kubectl(&c, &token, &["exec", "web-1", "--", "uname", "-a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ran uname -a in the stand-in\n"
    );
    let seen = seen_last(&k, "/api/v1/namespaces/default/pods/web-1/exec");
    assert_eq!(header_values(&seen, "impersonate-user"), ["alice"]);

    // No token, a garbage one: 401 in the Status shape kubectl prints.
    let out = kubectl(&c, "not-a-jwt", &["get", "--raw", "/version"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must be logged in") && err.contains("not valid for this cluster"),
        "{err}"
    );
    let metrics = reqwest::get(c.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("infra_connector_token_rejections_total{reason=\"malformed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("infra_connector_requests_total{status=\"200\"}"),
        "{metrics}"
    );
}

/// How many requests other than the connector's own RBAC sync (which runs
/// on its own schedule) reached the cluster.
fn proxied(k: &Running) -> usize {
    k.standin
        .state
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|s| !s.path.starts_with("rbac "))
        .count()
}

fn client_for(c: &ConnectorProc) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(c.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_choose_who_they_are() {
    let (s, k, c, key) = setup(&[]).await;
    let token = mint(&s, &key, "prod").await;
    let http = client_for(&c);
    // Asking to be someone else without the right: refused, not ignored.
    let before = k.standin.state.lock().unwrap().seen.len();
    let resp = http
        .get(format!("{}/version", c.url))
        .bearer_auth(&token)
        .header("Impersonate-User", "admin")
        .header("Impersonate-Group", "system:masters")
        .header("Impersonate-Extra-Scopes", "everything")
        .header("Impersonate-Uid", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert!(
        body["message"].as_str().unwrap().contains("impersonate"),
        "{body}"
    );
    // (The connector's RBAC sync, which runs on its own, may show up too.)
    let seen_now: Vec<String> = k.standin.state.lock().unwrap().seen[before..]
        .iter()
        .map(|s| s.path.clone())
        .filter(|p| !p.starts_with("rbac "))
        .collect();
    assert_eq!(
        seen_now,
        ["subjectaccessreviews"],
        "only the review reached the cluster"
    );

    let resp = http
        .get(format!("{}/version", c.url))
        .bearer_auth(&token)
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Real-IP", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let seen = seen_last(&k, "/version");
    assert_eq!(header_values(&seen, "impersonate-user"), ["alice"]);
    assert_eq!(header_values(&seen, "impersonate-group"), ["sre"]);
    // The API server's audit log gets the client's real address, not one it chose.
    assert_eq!(header_values(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert!(header_values(&seen, "x-real-ip").is_empty());
    assert!(!seen.headers.iter().any(|(k, _)| k == "impersonate-uid"));
    assert_eq!(
        header_values(&seen, "impersonate-extra-infra.dev%2fclient-address"),
        ["127.0.0.1"]
    );
    assert_eq!(
        header_values(&seen, "impersonate-extra-infra.dev%2frequest-id").len(),
        1
    );
    assert!(header_values(&seen, "impersonate-extra-scopes").is_empty());

    // A second Authorization header is refused outright.
    let resp = http
        .get(format!("{}/version", c.url))
        .header("Authorization", format!("Bearer {token}"))
        .header("Authorization", "Bearer sa-token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["code"], 401);
}

/// Encodes a JWT by hand (for tokens no honest signer would make).
fn forge(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    use base64::Engine;
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(msg.as_bytes());
    format!("{msg}.{}", b64(&sig))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused() {
    let (s, _k, c, key) = setup(&["--token-ttl", "2s"]).await;
    let http = client_for(&c);
    let status_of = |t: String| {
        let http = http.clone();
        let url = c.url.clone();
        async move {
            http.get(format!("{url}/version"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // For another destination.
    let alice = s.ok("GET", "/api/users?name=alice", None, 200).await["items"][0]["id"].clone();
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": alice, "destination": "staging", "role": "view"})),
        201,
    )
    .await;
    assert_eq!(status_of(mint(&s, &key, "staging").await).await, 401);

    // Signed by the server, then expired (the connector shares its clock).
    let good = mint(&s, &key, "prod").await;
    assert_eq!(status_of(good.clone()).await, 200);
    s.advance_clock(3);
    assert_eq!(status_of(good.clone()).await, 401);

    // The right kid, another key; alg none; HS256 keyed with the public key.
    let fresh = mint(&s, &key, "prod").await;
    let header: Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(fresh.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let claims: Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(fresh.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let kid = header["kid"].as_str().unwrap().to_string();
    let other = {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap()
    };
    let rng = ring::rand::SystemRandom::new();
    let forged = forge(
        json!({"alg": "ES256", "kid": kid, "typ": "JWT"}),
        claims.clone(),
        |m| other.sign(&rng, m).unwrap().as_ref().to_vec(),
    );
    assert_eq!(status_of(forged).await, 401);
    let none = forge(json!({"alg": "none", "kid": kid}), claims.clone(), |_| {
        Vec::new()
    });
    assert_eq!(status_of(none).await, 401);
    let jwks: Value = s
        .client
        .get(format!("{}/.well-known/jwks.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public = jwks["keys"][0].to_string();
    let hs = forge(json!({"alg": "HS256", "kid": kid}), claims, |m| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public.as_bytes());
        ring::hmac::sign(&key, m).as_ref().to_vec()
    });
    assert_eq!(status_of(hs).await, 401);
    assert_eq!(
        status_of(fresh).await,
        200,
        "a fresh honest token still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_and_token_file_rotation_are_picked_up() {
    // Hour-long epochs, ended by the clock: t1 is signed with the key the
    // connector fetched at start, t2 with one it has never seen.
    let (s, k, c, key) = setup(&["--signing-key-rotation", "1h"]).await;
    let http = client_for(&c);
    let t1 = mint(&s, &key, "prod").await;
    assert_eq!(
        http.get(format!("{}/version", c.url))
            .bearer_auth(&t1)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    s.advance_clock(3600);
    let t2 = mint(&s, &key, "prod").await;
    assert_ne!(t1.split('.').next(), t2.split('.').next(), "a new kid");
    assert_eq!(
        http.get(format!("{}/version", c.url))
            .bearer_auth(&t2)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    // The projected token rotates: the next request uses the new one.
    std::fs::write(&k.standin.token_file, "sa-token-2").unwrap();
    let resp = http
        .get(format!("{}/version", c.url))
        .bearer_auth(&t2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header_values(&seen_last(&k, "/version"), "authorization"),
        ["Bearer sa-token-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_become_a_byte_pipe() {
    let (s, _k, c, key) = setup(&[]).await;
    let token = mint(&s, &key, "prod").await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(c.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = c.url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(format!("POST /echo HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: echo\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls.write_all(b"hello through the pipe").await.unwrap();
    let mut buf = vec![0u8; 22];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello through the pipe");
    // The session's start and end are logged, with the bytes each way.
    drop(tls);
    common::wait_until("the connector to log the session's end", async || {
        c.log().contains("session ended")
    })
    .await;
    let log = c.log();
    assert!(log.contains("session started"), "{log}");
    let end = log.lines().find(|l| l.contains("session ended")).unwrap();
    assert!(
        end.contains("bytes_in=22") && end.contains("bytes_out=22") && end.contains("user=alice"),
        "{end}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_become_rbac_bindings() {
    let (s, k, _c, _key) = setup(&[]).await;
    let managed = |k: &Running| -> Vec<(String, Value)> {
        k.standin
            .state
            .lock()
            .unwrap()
            .bindings
            .iter()
            .filter(|(_, v)| v["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "infra")
            .map(|((ns, _), v)| (ns.clone(), v.clone()))
            .collect()
    };
    let wait_for = |k: &Running, n: usize| {
        common::wait_for_blocking(format!("{n} managed bindings"), || {
            Some(managed(k)).filter(|m| m.len() == n)
        })
    };
    // alice's cluster-wide view grant.
    let m = wait_for(&k, 1);
    assert_eq!(m[0].0, "");
    assert_eq!(m[0].1["roleRef"]["name"], "view");
    assert_eq!(m[0].1["subjects"][0]["kind"], "User");
    assert_eq!(m[0].1["subjects"][0]["name"], "alice");

    // A namespace grant to a group: a RoleBinding in that namespace.
    let sre = s.ok("GET", "/api/groups?name=sre", None, 200).await["items"][0]["id"].clone();
    let g = s
        .ok(
            "POST",
            "/api/grants",
            Some(json!({"group": sre, "destination": "prod.web", "role": "edit"})),
            201,
        )
        .await;
    let m = wait_for(&k, 2);
    let rb = m
        .iter()
        .find(|(ns, _)| ns == "web")
        .expect("a RoleBinding in web");
    assert_eq!(rb.1["subjects"][0]["kind"], "Group");
    assert_eq!(rb.1["subjects"][0]["name"], "sre");
    assert_eq!(rb.1["roleRef"]["name"], "edit");

    // Grants elsewhere make nothing here; removing a grant removes its binding.
    let bob = s
        .ok("POST", "/api/users", Some(json!({"name": "bob"})), 201)
        .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": bob["id"], "destination": "staging", "role": "admin"})),
        201,
    )
    .await;
    s.ok(
        "DELETE",
        &format!("/api/grants/{}", g["id"].as_str().unwrap()),
        None,
        204,
    )
    .await;
    let m = wait_for(&k, 1);
    assert_eq!(m[0].0, "");
    // The binding infra does not manage is untouched.
    assert!(
        k.standin
            .state
            .lock()
            .unwrap()
            .bindings
            .contains_key(&(String::new(), "cluster-admins".to_string()))
    );
}

/// Signs a cluster token with the server's own current signing key (read
/// from its store with its root key), as only the server could: what the
/// connector must do with a token whatever the server put in it.
async fn sign_as_server(s: &Server, claims: Value) -> String {
    use base64::Engine;
    use sqlx::Row;
    // The JWKS call makes sure the current key exists.
    let _ = s.call("GET", "/.well-known/jwks.json", None, None).await;
    let root =
        infra::server::crypto::RootKey::load_or_create(&s.data_dir.join("root.key")).unwrap();
    let mut db = s.db_connection().await;
    let row = sqlx::query("SELECT id, private_enc FROM signing_keys ORDER BY epoch DESC LIMIT 1")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let kid: String = row.try_get("id").unwrap();
    let enc: String = row.try_get("private_enc").unwrap();
    let der = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secrecy::ExposeSecret::expose_secret(
            &root.decrypt(&enc).unwrap(),
        ))
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut full = json!({"iss": s.url, "aud": "prod", "sub": "u-1", "iat": now, "nbf": now - 30,
                          "exp": now + 300, "jti": common::random_suffix()});
    for (k, v) in claims.as_object().unwrap() {
        full[k] = v.clone();
    }
    jsonwebtoken::encode(
        &header,
        &full,
        &jsonwebtoken::EncodingKey::from_ec_der(&der),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_masters_is_never_impersonated() {
    let (s, k, c, key) = setup(&[]).await;

    // A group named system:masters that an older server let into the
    // store: the server leaves it out of the token.
    let mut db = s.db_connection().await;
    let alice = s.ok("GET", "/api/users?name=alice", None, 200).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query(
        "INSERT INTO groups (id, name, created_at, updated_at) VALUES ('legacy', 'system:masters', 0, 0)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ('legacy', $1)")
        .bind(&alice)
        .execute(&mut db)
        .await
        .unwrap();
    let token = mint(&s, &key, "prod").await;
    let seen = version_through(&c, &k, &token);
    assert_eq!(header_values(&seen, "impersonate-group"), ["sre"]);

    // A token that carries it anyway (signed with the server's key): the
    // connector drops the group, and logs that once.
    for _ in 0..3 {
        let forged = sign_as_server(
            &s,
            json!({"name": "alice", "groups": ["system:masters", "sre", "SYSTEM:nodes"]}),
        )
        .await;
        let out = kubectl(&c, &forged, &["get", "--raw", "/version"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = seen_last(&k, "/version");
        assert_eq!(header_values(&seen, "impersonate-user"), ["alice"]);
        assert_eq!(header_values(&seen, "impersonate-group"), ["sre"]);
    }
    let log = c.log.lock().unwrap().clone();
    assert_eq!(
        log.matches("dropped a group").count(),
        2,
        "each reserved group logged once:\n{log}"
    );
    assert!(log.contains("system:masters"), "{log}");

    // A token naming a system: user is refused outright.
    let forged = sign_as_server(&s, json!({"name": "system:admin", "groups": []})).await;
    let before = proxied(&k);
    let out = kubectl(&c, &forged, &["get", "--raw", "/version"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reserves"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(proxied(&k), before, "nothing reached the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_key_for_dev_cannot_repoint_prod() {
    let (s, k, c, _key) = setup(&[]).await;
    let prod = s.ok("GET", "/api/destinations?name=prod", None, 200).await["items"][0].clone();

    // An admin makes a key for the dev cluster's connector, with the CLI.
    let m = common::Machine::new();
    m.ok(&[
        "login",
        &s.host(),
        "--key",
        common::ADMIN_KEY,
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ]);
    let dev_key = m.ok(&["keys", "add", "--connector", "--name", "dev"]);
    let dev_key = dev_key.trim();
    let dev_key_id = dev_key.split('.').next().unwrap();

    // Whoever holds it tries to point prod's users at their own endpoint.
    let evil_ca = common::private_ca().0;
    let (status, err) = s
        .call(
            "POST",
            "/api/destinations",
            Some(dev_key),
            Some(json!({"name": "prod", "url": "https://evil.example:443", "ca": evil_ca})),
        )
        .await;
    assert_eq!(status, 403, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains(dev_key_id) && msg.contains("dev") && msg.contains("prod"),
        "{msg}"
    );
    let (status, _) = s
        .call(
            "PUT",
            &format!("/api/destinations/{}", prod["id"].as_str().unwrap()),
            Some(dev_key),
            Some(json!({"name": "prod", "url": "https://evil.example:443", "ca": evil_ca})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call("GET", "/api/grants?destination=prod", Some(dev_key), None)
        .await;
    assert_eq!(status, 403, "nor read prod's grants");
    let after = s.ok("GET", "/api/destinations?name=prod", None, 200).await["items"][0].clone();
    assert_eq!(after["url"], prod["url"]);
    assert_eq!(after["ca"], prod["ca"]);

    // The key still does its own job.
    let (status, reg) = s
        .call(
            "POST",
            "/api/destinations",
            Some(dev_key),
            Some(json!({"name": "dev", "url": "https://10.0.0.9:443"})),
        )
        .await;
    assert_eq!(status, 201, "{reg}");

    // The real connector, started for prod with the dev key, exits and says why.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["connector", "--server", &s.url, "--name", "prod"])
        .args(["--listen", "127.0.0.1:0", "--endpoint", "127.0.0.1:1"])
        .args(["--kube-api", &k.url])
        .arg("--kube-token-file")
        .arg(&k.standin.token_file)
        .arg("--kube-ca-file")
        .arg(&k.ca)
        .arg("--server-ca-file")
        .arg(s.data_dir.join("tls.crt"))
        .arg("--data-dir")
        .arg(dir.path())
        .env("INFRA_CONNECTOR_ACCESS_KEY", dev_key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(dev_key_id)
            && err.contains("bound to destination dev")
            && err.contains("prod"),
        "{err}"
    );
    assert!(
        !err.contains(dev_key),
        "the secret stays out of the message"
    );

    // Every attempt is audited; so are registrations and URL/CA changes.
    let audit = s
        .ok("GET", "/api/audit?action=destination.register", None, 200)
        .await;
    let items = audit["items"].as_array().unwrap();
    let refused = items.iter().filter(|e| e["result"] == "forbidden").count();
    assert_eq!(refused, 3, "POST, PUT and the connector: {audit}");
    assert!(
        items
            .iter()
            .any(|e| e["result"] == "success" && e["target"] == "prod"),
        "{audit}"
    );
    let reads = s
        .ok("GET", "/api/audit?action=grants.read", None, 200)
        .await;
    assert_eq!(reads["totalCount"], 1, "{reads}");
    let (status, _) = s
        .call(
            "POST",
            "/api/destinations",
            Some(dev_key),
            Some(json!({"name": "dev", "url": "https://10.0.0.10:443"})),
        )
        .await;
    assert_eq!(status, 201);
    let updates = s
        .ok("GET", "/api/audit?action=destination.update", None, 200)
        .await;
    assert_eq!(updates["totalCount"], 1, "{updates}");
    assert!(
        updates["items"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("https://10.0.0.9:443 -> https://10.0.0.10:443"),
        "{updates}"
    );
    // Heartbeats that change nothing are not audited.
    drop(c);
}

/// Waits until `f` holds (see `common::wait_until_blocking`).
fn eventually(what: &str, f: impl FnMut() -> bool) {
    common::wait_until_blocking(what, f)
}

fn binding(k: &Running, ns: &str, subject: &str) -> Option<Value> {
    k.standin
        .state
        .lock()
        .unwrap()
        .bindings
        .iter()
        .find(|((n, _), v)| n == ns && v["subjects"][0]["name"] == json!(subject))
        .map(|(_, v)| v.clone())
}

async fn grant_state(s: &Server, id: &str) -> (Option<String>, Option<String>) {
    let g = s.ok("GET", &format!("/api/grants/{id}"), None, 200).await;
    (
        g["state"].as_str().map(String::from),
        g["stateMessage"].as_str().map(String::from),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_on_a_missing_namespace_blocks_no_other_grant() {
    let (s, k, _c, _key) = setup(&[]).await;
    let bob = s
        .ok("POST", "/api/users", Some(json!({"name": "bob"})), 201)
        .await;
    // First the grant on a namespace that does not exist, then one that does.
    let missing = s
        .ok(
            "POST",
            "/api/grants",
            Some(json!({"user": bob["id"], "destination": "prod.payments", "role": "edit"})),
            201,
        )
        .await;
    let web = s
        .ok(
            "POST",
            "/api/grants",
            Some(json!({"user": bob["id"], "destination": "prod.web", "role": "view"})),
            201,
        )
        .await;
    eventually("bob's RoleBinding in web", || {
        binding(&k, "web", "bob").is_some()
    });
    let id = |g: &Value| g["id"].as_str().unwrap().to_string();
    let pending = common::wait_for("the missing namespace's grant to get a state", async || {
        Some(grant_state(&s, &id(&missing)).await).filter(|p| p.0.is_some())
    })
    .await;
    assert_eq!(pending.0.as_deref(), Some("pending"), "{pending:?}");
    assert_eq!(
        pending.1.as_deref(),
        Some("namespace payments does not exist")
    );
    assert_eq!(
        grant_state(&s, &id(&web)).await.0.as_deref(),
        Some("applied")
    );

    // `infra grants list` shows where each stands.
    let m = common::Machine::new();
    m.ok(&[
        "login",
        &s.host(),
        "--key",
        common::ADMIN_KEY,
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ]);
    let listed = m.ok(&["grants", "list", "--destination", "prod"]);
    assert!(
        listed
            .contains("user:bob\tedit\tprod.payments\tpending: namespace payments does not exist"),
        "{listed}"
    );
    assert!(
        listed.contains("user:bob\tview\tprod.web\tapplied"),
        "{listed}"
    );

    // The namespace appears: the grant is applied without anyone touching it.
    k.standin
        .state
        .lock()
        .unwrap()
        .namespaces
        .insert("payments".into());
    eventually("bob's RoleBinding in payments", || {
        binding(&k, "payments", "bob").is_some()
    });
    common::wait_until("the grant to be applied", async || {
        grant_state(&s, &id(&missing)).await.0.as_deref() == Some("applied")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connectors_on_one_cluster_keep_their_own_bindings() {
    let (s, k, _c, _key) = setup(&[]).await;
    let _c2 = start_connector(&s, &k, "prod-blue", &[]).await;
    let alice = s.ok("GET", "/api/users?name=alice", None, 200).await["items"][0]["id"].clone();
    let blue = s
        .ok(
            "POST",
            "/api/grants",
            Some(json!({"user": alice, "destination": "prod-blue", "role": "edit"})),
            201,
        )
        .await;
    let managed_for = |dest: &str| -> usize {
        k.standin
            .state
            .lock()
            .unwrap()
            .bindings
            .values()
            .filter(|v| v["metadata"]["labels"]["infra.dev/destination"] == json!(dest))
            .count()
    };
    eventually("both destinations' bindings", || {
        managed_for("prod") == 1 && managed_for("prod-blue") == 1
    });
    // Several sync rounds of both connectors (1 s each) later, both stay.
    let deletes_before = k
        .standin
        .state
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|s| s.path == "rbac delete")
        .count();
    // A round starts with listing the destination's ClusterRoleBindings.
    let rounds_of = |dest: &str| -> usize {
        let selects = format!("infra.dev/destination={dest}");
        k.standin
            .state
            .lock()
            .unwrap()
            .lists
            .iter()
            .filter(|(kind, sel)| {
                kind == "ClusterRoleBinding" && sel.split(',').any(|l| l == selects)
            })
            .count()
    };
    let before = (rounds_of("prod"), rounds_of("prod-blue"));
    // Four rounds started, so at least three ran to the end, on each.
    eventually("four more sync rounds of both connectors", || {
        rounds_of("prod") >= before.0 + 4 && rounds_of("prod-blue") >= before.1 + 4
    });
    assert_eq!((managed_for("prod"), managed_for("prod-blue")), (1, 1));
    let deletes = k
        .standin
        .state
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|s| s.path == "rbac delete")
        .count();
    assert_eq!(deletes, deletes_before, "nobody deleted anybody's bindings");

    // Removing blue's grant removes only blue's binding.
    s.ok(
        "DELETE",
        &format!("/api/grants/{}", blue["id"].as_str().unwrap()),
        None,
        204,
    )
    .await;
    eventually("blue's binding removed", || managed_for("prod-blue") == 0);
    assert_eq!(managed_for("prod"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_binding_is_put_back() {
    let (_s, k, c, _key) = setup(&[]).await;
    eventually("alice's binding", || binding(&k, "", "alice").is_some());
    let key = {
        let st = k.standin.state.lock().unwrap();
        st.bindings
            .iter()
            .find(|(_, v)| v["subjects"][0]["name"] == "alice")
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    // Someone adds themselves to the managed binding.
    {
        let mut st = k.standin.state.lock().unwrap();
        let b = st.bindings.get_mut(&key).unwrap();
        b["subjects"].as_array_mut().unwrap().push(
            json!({"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}),
        );
        b["metadata"]["resourceVersion"] = json!("900");
    }
    eventually("the extra subject removed", || {
        binding(&k, "", "alice").is_some_and(|b| b["subjects"].as_array().unwrap().len() == 1)
    });
    // Someone points it at cluster-admin: roleRef cannot change, so it is
    // deleted and made again.
    {
        let mut st = k.standin.state.lock().unwrap();
        let b = st.bindings.get_mut(&key).unwrap();
        b["roleRef"]["name"] = json!("cluster-admin");
    }
    // (Deleted and made again: for a moment there is none.)
    eventually("the roleRef put back", || {
        binding(&k, "", "alice").is_some_and(|b| b["roleRef"]["name"] == "view")
    });
    // The grant states were taken by the server (its 204 is no error).
    assert!(
        !c.log()
            .contains("cannot tell the server where the grants stand"),
        "{}",
        c.log()
    );
    // The log line follows the repair; its reader may be a moment behind.
    eventually("the repair logged", || {
        c.log().contains("roleRef was ClusterRole cluster-admin")
    });
    let log = c.log();
    assert!(log.contains("repaired a managed binding"), "{log}");
    assert!(
        log.contains("mallory"),
        "the repair says what it found: {log}"
    );
    assert!(
        log.contains("roleRef was ClusterRole cluster-admin"),
        "{log}"
    );
    // Someone deletes it and makes one of that name by hand, without
    // infra's labels, bound to cluster-admin (`kubectl create
    // clusterrolebinding`): made again as the grant says.
    {
        let mut st = k.standin.state.lock().unwrap();
        let mut b = st.bindings.remove(&key).unwrap();
        b["metadata"]["labels"] = json!({});
        b["roleRef"]["name"] = json!("cluster-admin");
        b["metadata"]["resourceVersion"] = json!("901");
        st.bindings.insert(key.clone(), b);
    }
    eventually("the hand-made binding replaced", || {
        binding(&k, "", "alice").is_some_and(|b| {
            b["roleRef"]["name"] == "view"
                && b["metadata"]["labels"]["infra.dev/destination"] == "prod"
        })
    });
    eventually("that repair logged", || {
        c.log()
            .contains("made without infra's labels, with roleRef ClusterRole cluster-admin")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_is_allowed_only_with_permission_to_impersonate() {
    let (s, k, c, key) = setup(&[]).await;
    let token = mint(&s, &key, "prod").await;
    let out = kubectl(&c, &token, &["--as", "bob", "get", "--raw", "/version"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("forbidden") && err.contains("impersonate"),
        "{err}"
    );
    let review = k
        .standin
        .state
        .lock()
        .unwrap()
        .reviews
        .last()
        .cloned()
        .unwrap();
    assert_eq!(review["spec"]["user"], "alice");
    // As the API server sees her when impersonated: authenticated.
    assert_eq!(
        review["spec"]["groups"],
        json!(["sre", "system:authenticated"])
    );
    assert_eq!(review["spec"]["resourceAttributes"]["verb"], "impersonate");
    assert_eq!(review["spec"]["resourceAttributes"]["resource"], "users");
    assert_eq!(review["spec"]["resourceAttributes"]["name"], "bob");

    // The cluster lets alice impersonate bob and the group dev.
    {
        let mut st = k.standin.state.lock().unwrap();
        st.allowed.push((
            "alice".into(),
            "impersonate".into(),
            "users".into(),
            "bob".into(),
        ));
        st.allowed.push((
            "alice".into(),
            "impersonate".into(),
            "groups".into(),
            "dev".into(),
        ));
    }
    let out = kubectl(
        &c,
        &token,
        &[
            "--as",
            "bob",
            "--as-group",
            "dev",
            "get",
            "--raw",
            "/version",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = seen_last(&k, "/version");
    assert_eq!(header_values(&seen, "impersonate-user"), ["bob"]);
    assert_eq!(header_values(&seen, "impersonate-group"), ["dev"]);
    assert_eq!(
        header_values(&seen, "impersonate-extra-infra.dev%2foriginal-user"),
        ["alice"],
        "the cluster's audit log names the real person"
    );
    // A group she may not use: refused, nothing reaches the cluster.
    let out = kubectl(
        &c,
        &token,
        &[
            "--as",
            "bob",
            "--as-group",
            "system:masters",
            "get",
            "--raw",
            "/version",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("system:masters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        header_values(&seen_last(&k, "/version"), "impersonate-group"),
        ["dev"]
    );
    // infra's own audit extras are not hers to write, allowed or not
    // (what kubectl's --as-user-extra sends).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), &c.ca_pem).unwrap();
    let out = Command::new("curl")
        .args(["-s", "--fail-with-body", "--cacert"])
        .arg(dir.path().join("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Impersonate-User: bob"])
        .args([
            "-H",
            "Impersonate-Extra-infra.dev%2foriginal-user: somebody",
        ])
        .arg(format!("{}/version", c.url))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("infra's own"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connector_token_is_not_a_login_problem() {
    let (s, k, c, key) = setup(&[]).await;
    let token = mint(&s, &key, "prod").await;
    // The API server stops accepting the connector's own token.
    k.standin.state.lock().unwrap().refuse_connector = true;
    let out = kubectl(&c, &token, &["get", "--raw", "/version"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("must be logged in") && !err.contains("Unauthorized"),
        "not sent to infra login: {err}"
    );
    assert!(blames_the_connector(&out), "{err}");
    assert!(
        c.log().contains("refused the connector's own credential"),
        "logged loudly: {}",
        c.log()
    );
    // So is a `kubectl --as` whose access review the API server refused
    // to take from the connector.
    let out = kubectl(&c, &token, &["--as", "bob", "get", "--raw", "/version"]);
    assert!(
        blames_the_connector(&out),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same through kubectl's API discovery (what `kubectl get pods`
    // asks first), whose failures client-go shows only as plain text.
    let out = kubectl(&c, &token, &["get", "pods"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connector of prod") && !err.contains("unknown"),
        "{err}"
    );
    // The user's own bad token is still a 401.
    k.standin.state.lock().unwrap().refuse_connector = false;
    let out = kubectl(&c, "not-a-jwt", &["get", "--raw", "/version"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be logged in"));
    // A 401 from a pod behind the API server's proxy is that pod's: passed on.
    let out = kubectl(
        &c,
        &token,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web/proxy/private",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("not your login") && err.contains("provide credentials"),
        "{err}"
    );
    // The connector may not impersonate (its ClusterRole lost it): a 503
    // naming the connector, logged, not a 403 the person is blamed for.
    k.standin.state.lock().unwrap().refuse_impersonation = true;
    let out = kubectl(&c, &token, &["get", "--raw", "/version"]);
    assert!(
        blames_the_connector(&out),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        c.log().contains("the connector may not impersonate"),
        "{}",
        c.log()
    );
}

/// Whether kubectl's error names the connector, not the person's login.
fn blames_the_connector(out: &std::process::Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    !out.status.success() && err.contains("connector of prod") && err.contains("not your login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_with_a_trailing_newline_works_for_proxy_and_sync() {
    let (s, k, c, key) = setup(&[]).await;
    eventually("alice's binding", || binding(&k, "", "alice").is_some());
    // Rotated to a file that ends in a newline, as `echo` writes it.
    std::fs::write(&k.standin.token_file, "sa-token-2\n").unwrap();
    let token = mint(&s, &key, "prod").await;
    let out = kubectl(&c, &token, &["get", "--raw", "/version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        header_values(&seen_last(&k, "/version"), "authorization"),
        ["Bearer sa-token-2"]
    );
    // The RBAC sync uses the same, trimmed token at once.
    let bob = s
        .ok("POST", "/api/users", Some(json!({"name": "bob"})), 201)
        .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": bob["id"], "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    eventually("bob's binding, made with the new token", || {
        binding(&k, "", "bob").is_some()
    });
    let seen = k.standin.state.lock().unwrap().seen.clone();
    let create = seen.iter().rev().find(|s| s.path == "rbac create").unwrap();
    assert_eq!(
        header_values(create, "authorization"),
        ["Bearer sa-token-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_port_proxies_every_path_and_health_lives_elsewhere() {
    let (s, k, c, key) = setup(&[]).await;
    let token = mint(&s, &key, "prod").await;
    for path in ["/healthz", "/livez", "/readyz", "/metrics"] {
        let _ = kubectl(&c, &token, &["get", "--raw", path]);
        let seen = k.standin.state.lock().unwrap().seen.clone();
        assert!(
            seen.iter().any(|s| s.path == path),
            "{path} reached the API server"
        );
    }
    // Unauthenticated, the users' port answers nothing of its own.
    let resp = client_for(&c)
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The connector's own health and metrics are on the private listener.
    let m = c.metrics_url();
    assert!(m.starts_with("http://127.0.0.1:"), "{m}");
    let text = reqwest::get(&m).await.unwrap().text().await.unwrap();
    assert!(text.contains("infra_connector_requests_total"), "{text}");
    let health = reqwest::get(m.replace("/metrics", "/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Requests go to the API server over HTTP/2; exec upgrades over HTTP/1.1.
    let versions = k.standin.state.lock().unwrap().versions.clone();
    assert!(
        versions
            .iter()
            .any(|(p, v)| p == "/livez" && v == "HTTP/2.0"),
        "{versions:?}"
    );
    // And one line per request in the connector's log.
    let log = c.log();
    assert!(
        log.lines().any(|l| l.contains("request")
            && l.contains("user=alice")
            && l.contains("path=/livez")),
        "{log}"
    );
}

/// A user with a grant on `prod`, and her key.
async fn alice_on_prod(s: &Server) -> String {
    s.viewer_of("alice", "prod").await.1
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Outside a cluster, the connector reaches it as a kubeconfig context
/// does: here a kind-like one, whose user is a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_context_with_a_client_certificate_reaches_the_cluster() {
    let s = Server::start(Backend::Sqlite).await;
    let k = start_standin_mtls().await;
    let key = alice_on_prod(&s).await;
    let (cert, client_key) = k.client.clone().unwrap();
    let ca = std::fs::read_to_string(&k.ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: other\n\
             clusters:\n- name: kind-kind\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             - name: other\n  cluster:\n    server: https://127.0.0.1:1\n\
             users:\n- name: kind-kind\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
             contexts:\n- name: kind-kind\n  context:\n    cluster: kind-kind\n    user: kind-kind\n\
             - name: other\n  context:\n    cluster: other\n    user: kind-kind\n",
            k.url,
            b64(&ca),
            b64(&cert),
            b64(&client_key)
        ),
    )
    .unwrap();

    // A context that is not there: named, with the ones that are.
    let out = Command::new(common::bin())
        .args(["connector", "--server", &s.url, "--name", "prod"])
        .args(["--endpoint", "127.0.0.1:1", "--context", "kind"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("INFRA_CONNECTOR_ACCESS_KEY", "unused")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no context \"kind\"") && err.contains("kind-kind, other"),
        "{err}"
    );

    let cluster: Vec<std::ffi::OsString> = vec![
        "--kubeconfig".into(),
        kubeconfig.clone().into(),
        "--context".into(),
        "kind-kind".into(),
    ];
    let c = start_connector_with(&s, &s.url, "prod", &cluster, &[]).await;
    let token = mint(&s, &key, "prod").await;
    let out = kubectl(&c, &token, &["get", "--raw", "/version"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    // As alice, authenticated by the certificate alone (the stand-in refuses
    // any Authorization header: alice's infra token never reaches it).
    let seen = seen_last(&k, "/version");
    assert_eq!(header_values(&seen, "impersonate-user"), ["alice"]);
    // The RBAC sync works through the same context.
    eventually("the grant's binding on the cluster", || {
        k.standin
            .state
            .lock()
            .unwrap()
            .seen
            .iter()
            .any(|s| s.path == "rbac create")
    });
}

/// The exec-plugin form of a kubeconfig user, and a connector that names
/// the server otherwise than the server names itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_exec_plugin_and_the_issuer_learnt_from_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start(Backend::Sqlite).await;
    let k = start_standin().await;
    let key = alice_on_prod(&s).await;
    let dir = tempfile::tempdir().unwrap();
    // A plugin as cloud CLIs have: prints an ExecCredential with a token.
    let plugin = dir.path().join("token-plugin");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho run >> {}/runs\nprintf '%s' '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"sa-token-1\"}}}}'\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(&k.ca, dir.path().join("ca.crt")).unwrap();
    let kubeconfig = dir.path().join("config");
    // The CA by a path relative to the kubeconfig, as kubectl reads it.
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: standin\n\
             clusters:\n- name: standin\n  cluster:\n    server: {}\n    certificate-authority: ca.crt\n\
             users:\n- name: plugin\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\n\
             contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: plugin\n",
            k.url,
            plugin.display()
        ),
    )
    .unwrap();
    let cluster: Vec<std::ffi::OsString> = vec!["--kubeconfig".into(), kubeconfig.into()];
    // The server names itself https://127.0.0.1:PORT; this connector knows
    // it as https://localhost:PORT.
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let as_localhost = format!("https://localhost:{port}");
    let c = start_connector_with(&s, &as_localhost, "prod", &cluster, &[]).await;
    assert!(
        c.log()
            .contains(&format!("the server's tokens name it {}", s.url)),
        "{}",
        c.log()
    );
    let token = mint(&s, &key, "prod").await;
    let out = kubectl(&c, &token, &["get", "--raw", "/version"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    assert_eq!(
        header_values(&seen_last(&k, "/version"), "impersonate-user"),
        ["alice"]
    );
    assert!(dir.path().join("runs").exists(), "the plugin ran");

    // A token of another issuer: refused, and the log names both.
    let forged = sign_as_server(&s, json!({"name": "alice", "iss": "https://evil.example"})).await;
    let out = kubectl(&c, &forged, &["get", "--raw", "/version"]);
    assert!(!out.status.success());
    eventually("the log line naming both issuers", || {
        let log = c.log();
        log.contains("https://evil.example")
            && log.contains(&format!("accepts tokens of {}", s.url))
    });
}

/// `infra_http_requests_total` of the server for one method and route.
async fn server_requests(s: &Server, method: &str, route: &str) -> u64 {
    s.metrics()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("infra_http_requests_total{")
                && l.contains(&format!("method=\"{method}\""))
                && l.contains(&format!("route=\"{route}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Idle connectors cost the server little: a heartbeat that changes
/// nothing is a batched write, and the signing keys are fetched again only
/// when the server's cache headers say they are stale (5 minutes), not
/// after every heartbeat.
#[tokio::test]
async fn heartbeats_do_not_fetch_the_signing_keys_again_while_they_are_fresh() {
    let s = Server::start(Backend::Sqlite).await;
    let k = start_standin().await;
    let _c = start_connector(&s, &k, "prod", &["--heartbeat", "1s"]).await;
    let seen = || async {
        let v = s.ok("GET", "/api/destinations?name=prod", None, 200).await;
        v["items"][0]["lastSeen"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let first = seen().await;
    assert!(!first.is_empty(), "the registration sets lastSeen");
    common::wait_until("five heartbeats, one a second", async || {
        server_requests(&s, "POST", "/api/destinations").await >= 5
    })
    .await;
    assert_eq!(
        server_requests(&s, "GET", "/.well-known/jwks.json").await,
        1,
        "the keys are fetched once, at start, while the server says they stay fresh"
    );
    // The heartbeats still tell that the connector is alive.
    common::wait_until(format!("lastSeen to move on from {first}"), async || {
        seen().await > first
    })
    .await;
}

/// `kubectl auth whoami` through the connector shows the user and groups
/// that `infra access explain` says the cluster sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_whoami_matches_access_explain() {
    let (s, k, c, key) = setup(&[]).await;
    let token = mint(&s, &key, "prod").await;
    let out = kubectl(&c, &token, &["auth", "whoami", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let review: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(review["kind"], "SelfSubjectReview", "{review}");
    let info = &review["status"]["userInfo"];
    let seen = seen_last(&k, "selfsubjectreviews");
    assert_eq!(header_values(&seen, "impersonate-user"), ["alice"]);

    let m = common::Machine::new();
    let login = m.run(&[
        "login",
        &s.host(),
        "--key",
        common::ADMIN_KEY,
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ]);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let explained: Value =
        serde_json::from_str(&m.ok(&["access", "explain", "alice", "prod", "--format", "json"]))
            .unwrap();
    let effective = &explained["effective"];
    assert_eq!(info["username"], effective["user"], "{review}\n{explained}");
    let mut seen_groups: Vec<String> = info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .filter(|g| g != "system:authenticated")
        .collect();
    seen_groups.sort();
    let mut said: Vec<String> = effective["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect();
    said.sort();
    assert_eq!(seen_groups, said, "{review}\n{explained}");
    assert_eq!(said, ["sre"]);
    assert_eq!(
        effective["roles"],
        json!([{"roles": ["view"]}]),
        "{explained}"
    );
}

/// A kubectl that stays running (an interactive exec, a watch): its stdin
/// a pipe kept open, its output collected as it comes.
struct Live {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

fn kubectl_live(c: &ConnectorProc, token: &str, args: &[&str]) -> Live {
    kubectl_live_with(std::path::Path::new("kubectl"), c, token, args)
}

fn kubectl_live_with(
    program: &std::path::Path,
    c: &ConnectorProc,
    token: &str,
    args: &[&str],
) -> Live {
    let dir = tempfile::tempdir().unwrap();
    let mut child = kubectl_command(program, c, token, dir.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let collect = |pipe: Box<dyn std::io::Read + Send>| {
        let acc = Arc::new(Mutex::new(String::new()));
        let to = acc.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut a = to.lock().unwrap();
                a.push_str(&line);
                a.push('\n');
            }
        });
        acc
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    Live {
        stdin: child.stdin.take(),
        child,
        out,
        err,
        _dir: dir,
    }
}

impl Live {
    fn out(&self) -> String {
        self.out.lock().unwrap().clone()
    }
    fn err(&self) -> String {
        self.err.lock().unwrap().clone()
    }
    fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for every one of `live` to exit; when each did, after `since`.
fn exit_times(live: &mut [&mut Live], since: std::time::Instant) -> Vec<Duration> {
    let mut took = vec![None; live.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while took.iter().any(Option::is_none) {
        for (i, l) in live.iter_mut().enumerate() {
            if took[i].is_none() && l.child.try_wait().unwrap().is_some() {
                took[i] = Some(since.elapsed());
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 30 s later: {:?}",
            live.iter().map(|l| l.err()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    took.into_iter().map(Option::unwrap).collect()
}

/// Access cut mid-stream: `infra grants remove` ends alice's open exec,
/// watch and `logs -f` within 2 s (the exec saying why); her token is
/// refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_grant_cuts_open_exec_watch_and_logs_within_two_seconds() {
    let (s, _k, c, key) = setup(&[]).await;
    let token = mint(&s, &key, "prod").await;
    let mut exec = kubectl_live(&c, &token, &["exec", "-i", "web-1", "--", "cat"]);
    exec.send("still here\n");
    common::wait_until_blocking("the exec session to echo", || {
        exec.out().contains("still here")
    });
    let mut watch = kubectl_live(&c, &token, &["get", "pods", "-w", "-l", "app=long"]);
    common::wait_until_blocking("the watch to show its events", || {
        watch.out().contains("web-2")
    });
    let mut logs = kubectl_live(&c, &token, &["logs", "-f", "web-1"]);
    common::wait_until_blocking("the logs to flow", || logs.out().contains("log line 2"));
    let admin = common::Machine::new();
    admin.login_admin(&s);

    let start = std::time::Instant::now();
    admin.ok(&[
        "grants", "remove", "prod", "--user", "alice", "--role", "view",
    ]);
    let removed = start.elapsed();
    let took = exit_times(&mut [&mut exec, &mut watch, &mut logs], start);
    eprintln!(
        "grants remove took {removed:?}; the exec ended {:?}, the watch {:?} and logs -f {:?} \
         after it started",
        took[0], took[1], took[2]
    );
    for (what, t) in [("exec", took[0]), ("watch", took[1]), ("logs -f", took[2])] {
        assert!(
            t - removed < Duration::from_secs(2),
            "the {what} ended {:?} after the grant was removed",
            t - removed
        );
    }
    let said = "infra: access to prod was revoked";
    assert!(exec.err().contains(said), "exec: {}", exec.err());
    assert!(!exec.child.wait().unwrap().success());
    // kubectl get -w shows no watch ERROR event (client-go's reflectors
    // log it); the watch ends.
    assert!(watch.out().contains("web-2"), "watch: {}", watch.out());
    assert!(c.log().contains("cut a stream"), "{}", c.log());
    // The same token is refused now, rather than waiting for it to expire.
    let again = kubectl(&c, &token, &["get", "pods"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("your access was revoked"),
        "{err}"
    );
}

/// Leaving a group the token names, and a revoked access key, cut open
/// streams too; a person with access left keeps theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_group_or_the_key_cuts_open_streams() {
    let (s, _k, c, key) = setup(&[]).await;
    let (_, bob_key) = s.viewer_of("bob", "prod").await;
    let token = mint(&s, &key, "prod").await;
    let bob_token = mint(&s, &bob_key, "prod").await;
    let mut alice_watch = kubectl_live(&c, &token, &["get", "pods", "-w", "-l", "app=long"]);
    let mut bob_exec = kubectl_live(&c, &bob_token, &["exec", "-i", "web-1", "--", "cat"]);
    bob_exec.send("bob here\n");
    common::wait_until_blocking("both streams to flow", || {
        alice_watch.out().contains("web-2") && bob_exec.out().contains("bob here")
    });
    let admin = common::Machine::new();
    admin.login_admin(&s);
    // alice's token says she is in sre; out of it, her stream ends, though
    // her own grant stays.
    admin.ok(&["groups", "removeuser", "sre", "alice"]);
    let took = exit_times(&mut [&mut alice_watch], std::time::Instant::now());
    assert!(took[0] < Duration::from_secs(5), "{took:?}");
    // A new token (without sre) works at once.
    let fresh = mint(&s, &key, "prod").await;
    let out = kubectl(&c, &fresh, &["get", "pods"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // bob was not touched: his session goes on.
    bob_exec.send("and still\n");
    common::wait_until_blocking("bob's session to go on", || {
        bob_exec.out().contains("and still")
    });
    // bob's key revoked (as `infra logout` does): his session ends.
    let key_id = bob_key.split('.').next().unwrap();
    s.ok("DELETE", &format!("/api/access-keys/{key_id}"), None, 204)
        .await;
    let took = exit_times(&mut [&mut bob_exec], std::time::Instant::now());
    assert!(took[0] < Duration::from_secs(5), "{took:?}");
    assert!(
        bob_exec.err().contains("infra: access to prod was revoked"),
        "{}",
        bob_exec.err()
    );
    let log = c.log();
    assert!(log.contains("no longer in the group sre"), "{log}");
    assert!(log.contains("was revoked"), "{log}");
}

/// The versioned kubectl beside the one on PATH (`kubectl.1.27`, …).
fn versioned_kubectl(version: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is on PATH");
    let real = std::fs::canonicalize(kubectl).unwrap();
    let p = real.parent().unwrap().join(format!("kubectl.{version}"));
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// The sessions the admin sees, newest first.
fn sessions(admin: &common::Machine) -> Vec<Value> {
    let out = admin.ok(&["sessions", "list", "--format", "json"]);
    serde_json::from_str(&out).unwrap()
}

/// `infra connector --record-sessions`: an interactive exec is recorded
/// (what was typed and shown, with the exit code); `infra sessions play`
/// shows byte for byte what kubectl showed, and so does asciinema with the
/// exported file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_session_is_recorded_and_plays_back_byte_for_byte() {
    let s = Server::start(Backend::Sqlite).await;
    let k = start_standin().await;
    let c = start_connector(&s, &k, "prod", &["--record-sessions"]).await;
    let key = alice_on_prod(&s).await;
    let token = mint(&s, &key, "prod").await;

    let mut exec = kubectl_live(&c, &token, &["exec", "-i", "web-1", "--", "cat"]);
    exec.send("hello wörld\n");
    common::wait_until_blocking("the echo", || exec.out().contains("hello wörld"));
    std::thread::sleep(Duration::from_millis(300));
    exec.send("second line ✓\n");
    common::wait_until_blocking("the second echo", || exec.out().contains("second"));
    drop(exec.stdin.take());
    let status = common::wait_for_exit(&mut exec.child, "kubectl exec");
    assert!(status.success(), "{}", exec.err());
    let shown = exec.out();
    assert_eq!(shown, "hello wörld\nsecond line ✓\n");

    let failed = kubectl(&c, &token, &["exec", "web-1", "--", "exit", "3"]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");

    let admin = common::Machine::new();
    admin.login_admin(&s);
    let mut list = Vec::new();
    common::wait_until_blocking("both sessions to end", || {
        list = sessions(&admin);
        list.len() == 2 && list.iter().all(|x| x.get("ended").is_some())
    });
    let (last, first) = (&list[0], &list[1]);
    assert_eq!(first["user"], "alice", "{first}");
    assert_eq!(first["destination"], "prod");
    assert_eq!(first["namespace"], "default");
    assert_eq!(first["pod"], "web-1");
    assert_eq!(first["kind"], "exec");
    assert_eq!(first["command"], "cat");
    assert_eq!(first["exitCode"], 0);
    assert_eq!(last["command"], "exit 3");
    assert_eq!(last["exitCode"], 3);
    let id = first["id"].as_str().unwrap();

    // Played back: exactly what kubectl showed.
    let played = admin
        .cmd()
        .args(["sessions", "play", id, "--speed", "100"])
        .output()
        .unwrap();
    assert!(
        played.status.success(),
        "{}",
        String::from_utf8_lossy(&played.stderr)
    );
    assert_eq!(String::from_utf8(played.stdout).unwrap(), shown);
    // The exported file: asciicast v2 with the typed input and the timing.
    let file = admin.home().join("session.cast");
    admin.ok(&["sessions", "export", id, "-o", file.to_str().unwrap()]);
    let cast = std::fs::read_to_string(&file).unwrap();
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{cast}");
    assert_eq!(header["command"], "cat");
    let events: Vec<(f64, String, String)> =
        lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let typed: String = events
        .iter()
        .filter(|e| e.1 == "i")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(typed, "hello wörld\nsecond line ✓\n");
    let times: Vec<f64> = events.iter().map(|e| e.0).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times.last().unwrap() - times[0] >= 0.25,
        "the pause is kept: {times:?}"
    );
    // asciinema reads it as its own (tests/run.sh installs it in the
    // tests' venv).
    let python = std::env::var("INFRA_TEST_PYTHON").expect("run the tests with tests/run.sh");
    let asciinema = std::path::Path::new(&python).with_file_name("asciinema");
    let out = Command::new(&asciinema)
        .arg("cat")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shown);
    // Who watched is audited.
    let audit = admin.ok(&["audit", "--action", "session.play", "--format", "json"]);
    assert!(audit.contains(id), "{audit}");
    // alice sees her own sessions; she is not an admin.
    let (status, own) = s.call("GET", "/api/sessions", Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(own["items"].as_array().unwrap().len(), 2);
}

/// A grant that asks for recorded sessions records only those under it;
/// a session that cannot be recorded is refused (an old kubectl's SPDY),
/// and one that reaches --max-session-bytes is ended, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_per_grant_and_sessions_that_cannot_be_recorded() {
    let s = Server::start(Backend::Sqlite).await;
    let k = start_standin().await;
    let c = start_connector(&s, &k, "prod", &["--max-session-bytes", "2000"]).await;
    let alice_key = alice_on_prod(&s).await;
    let (_bob, bob_key) = s.user_with_key("bob").await;
    let admin = common::Machine::new();
    admin.login_admin(&s);
    let said = admin.run(&[
        "grants",
        "add",
        "prod",
        "--user",
        "bob",
        "--role",
        "edit",
        "--record-sessions",
    ]);
    let err = String::from_utf8_lossy(&said.stderr);
    assert!(
        said.status.success() && err.contains("sessions recorded"),
        "{err}"
    );
    let listed = admin.ok(&["grants", "list", "--destination", "prod"]);
    assert!(
        listed.contains("RECORDED") || listed.contains("yes"),
        "{listed}"
    );
    // The connector learns the grant through its long poll.
    common::wait_until_blocking("the connector to see the grant", || {
        c.log().contains("RBAC reconciled") && c.log().matches("created=").count() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));

    let alice = mint(&s, &alice_key, "prod").await;
    let bob = mint(&s, &bob_key, "prod").await;
    let out = kubectl(&c, &alice, &["exec", "web-1", "--", "exit", "0"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(sessions(&admin).is_empty(), "alice's grant records nothing");
    let out = kubectl(&c, &bob, &["exec", "web-1", "--", "exit", "0"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    common::wait_until_blocking("bob's session to be listed", || {
        sessions(&admin)
            .iter()
            .any(|x| x["user"] == "bob" && x["exitCode"] == 0)
    });

    // kubectl 1.27 speaks SPDY to exec, which cannot be recorded: refused.
    let mut old = kubectl_live_with(
        &versioned_kubectl("1.27"),
        &c,
        &bob,
        &["exec", "web-1", "--", "exit", "0"],
    );
    let status = common::wait_for_exit(&mut old.child, "kubectl 1.27 exec");
    assert!(!status.success());
    assert!(
        old.err().contains("use kubectl 1.30 or later"),
        "{}",
        old.err()
    );

    // Past --max-session-bytes the session ends, with the reason.
    let mut flood = kubectl_live(&c, &bob, &["exec", "web-1", "--", "flood"]);
    let status = common::wait_for_exit(&mut flood.child, "the flooding exec");
    assert!(!status.success());
    assert!(flood.err().contains("recording limit"), "{}", flood.err());
    common::wait_until_blocking("the flood to be listed as ended", || {
        sessions(&admin)
            .iter()
            .any(|x| x["command"] == "flood" && x["endReason"] == "recording limit")
    });
    let list = sessions(&admin);
    let flooded = list.iter().find(|x| x["command"] == "flood").unwrap();
    assert!(flooded["bytes"].as_u64().unwrap() <= 2000, "{flooded}");

    // The server gone mid-session: the recording cannot go on, so neither
    // does the session; and no new one starts.
    let mut open = kubectl_live(&c, &bob, &["exec", "-i", "web-1", "--", "cat"]);
    open.send("before\n");
    common::wait_until_blocking("the echo", || open.out().contains("before"));
    let mut s = s;
    s.stop();
    // (It may have ended already, when "before" was not stored yet.)
    if let Some(stdin) = open.stdin.as_mut() {
        use std::io::Write;
        let _ = stdin.write_all(b"after\n").and_then(|()| stdin.flush());
    }
    let status = common::wait_for_exit(&mut open.child, "the exec without its recording");
    assert!(!status.success());
    assert!(
        open.err().contains("recording cannot be stored"),
        "{}",
        open.err()
    );
    let refused = kubectl(&c, &bob, &["exec", "web-1", "--", "exit", "0"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("the recording cannot start"),
        "{err}"
    );
}

/// Names are not all ASCII (josé@example.com): they reach the cluster as
/// UTF-8, as client-go sends them, instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_beyond_ascii_reaches_the_cluster() {
    let (s, k, c, _key) = setup(&[]).await;
    let (_, key) = s.viewer_of("josé@example.com", "prod").await;
    let token = mint(&s, &key, "prod").await;
    let seen = version_through(&c, &k, &token);
    assert!(
        seen.headers.iter().any(|(h, _)| h == "impersonate-user"),
        "{:?}",
        seen.headers
    );
}
