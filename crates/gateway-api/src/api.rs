//! The HTTP server: Scaleway's `s2s-vpn/v1alpha1` paths and the Secret
//! Manager calls a PSK needs (access a version; create a secret, add a
//! version and get a secret, so `change-psk` can point at a caller's own
//! secret), authenticated by `X-Auth-Token`.
//!
//! Handlers only translate HTTP (path, query, JSON body, region, token)
//! into the `ops` functions, each run in one store transaction on the
//! blocking pool; errors leave as Scaleway's error bodies. Request bodies
//! are bounded (64 KiB). Nothing here logs a request body or a response,
//! which may carry a PSK.
//!
//! Slow and greedy clients are bounded too ([`serve_with_shutdown`]): at
//! most `api.max_connections` connections are served at once (the next
//! ones wait in the listen backlog), a client has `api.header_timeout_secs`
//! to send a request's headers, counted from the connection or from the
//! previous response (so idle keep-alive connections are closed as well),
//! and `api.body_timeout_secs` to send its body; a connection whose
//! response makes no progress for `api.body_timeout_secs` (a client that
//! does not read) is closed too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gateway_config::{ApiSection, Config, LiveConfig};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::ops::{self, ListQuery, Scope};
use crate::store::{Owned, Store};

pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading API tokens: {0}")]
    Tokens(#[from] gateway_config::ConfigError),
    #[error(
        "no API token configured (api.tokens or api.tokens_file): refusing to serve an open API"
    )]
    NoTokens,
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    store: Store,
    /// Replaced whole by a reload: each request takes the current one.
    live: LiveConfig,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "internal error serving an API call");
        }
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok((StatusCode::OK, Json(v)).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn check_region(st: &AppState, region: &str) -> Result<(), ApiError> {
    let config = st.live.get();
    if region != config.gateway.region {
        return Err(ApiError::unknown(
            "region",
            format!(
                "unknown region {region:?}: this gateway serves {}",
                config.gateway.region
            ),
        ));
    }
    Ok(())
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequest(format!("body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::InvalidRequest(
            "body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

/// Finds the caller's key and hands its [`Scope`] to the handlers.
async fn auth(
    State(st): State<AppState>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(token) = headers.get("x-auth-token") else {
        return ApiError::Unauthenticated {
            reason: "not_found",
        }
        .into_response();
    };
    let token = token.as_bytes();
    // Compare against every key, in constant time per key, without
    // stopping at the first match (keys are unique: the configuration
    // refuses a token given twice).
    let keys = st.live.keys();
    let mut found = 0u64;
    for (i, k) in keys.iter().enumerate() {
        let eq = k.secret.as_slice().ct_eq(token);
        found = subtle::ConditionallySelectable::conditional_select(&found, &(i as u64 + 1), eq);
    }
    let Some(key) = found.checked_sub(1).and_then(|i| keys.get(i as usize)) else {
        return ApiError::Unauthenticated {
            reason: "invalid_argument",
        }
        .into_response();
    };
    let scope = match &key.scope {
        None => Scope::all(),
        Some(s) => Scope::projects(&s.projects),
    };
    req.extensions_mut().insert(scope);
    next.run(req).await
}

/// Gives axum's own refusals (405 method not allowed, 413 body too large,
/// extractor rejections) Scaleway's error shape: the SDK parses every error
/// body as JSON.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this path".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body larger than {MAX_BODY} bytes"),
        s => format!("invalid request ({s})"),
    };
    let body = serde_json::json!({"type": "invalid_request_error", "message": message});
    (status, Json(body)).into_response()
}

/// A stream whose writes fail once they have made no progress for
/// `limit`: hyper has no write timeout, and a client that sends requests
/// but never reads the answers would otherwise keep its connection slot.
struct WriteStallTimeout<S> {
    inner: S,
    limit: Duration,
    /// Running while a write (or flush) is blocked.
    stall: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteStallTimeout<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stall: None,
        }
    }

    fn blocked<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        r: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        match r {
            Poll::Ready(r) => {
                self.stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if stall.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteStallTimeout<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteStallTimeout<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.blocked(cx, r)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.blocked(cx, r)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads the whole body (at most [`MAX_BODY`]) within the body timeout,
/// so a client trickling its body cannot hold a connection and a handler.
async fn read_body_in_time(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => b,
        // Over the size limit (or the client went away mid-body).
        Ok(Err(_)) => {
            let body = serde_json::json!({
                "type": "invalid_request_error",
                "message": format!("request body larger than {MAX_BODY} bytes"),
            });
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
        }
        Err(_) => {
            let body = serde_json::json!({
                "type": "invalid_request_error",
                "message": format!("request body not received within {} s", limit.as_secs()),
            });
            let mut r = (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response();
            // The rest of the body may still be on its way: do not read it.
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

async fn fallback() -> Response {
    ApiError::InvalidRequest("no such API path or method".into()).into_response()
}

/// Builds the router (for tests and for embedding).
pub fn router(config: Config, store: Store) -> Result<Router, ServeError> {
    router_live(LiveConfig::new(config)?, store)
}

/// [`router`] on a configuration that a reload can replace
/// ([`LiveConfig::replace`]): tokens, gateway types, public IPs and
/// private networks are read per request.
pub fn router_live(live: LiveConfig, store: Store) -> Result<Router, ServeError> {
    if live.keys().is_empty() {
        return Err(ServeError::NoTokens);
    }
    let st = AppState { store, live };
    let p = "/s2s-vpn/v1alpha1/regions/{region}";
    let r = Router::new()
        .route(&format!("{p}/vpn-gateway-types"), get(list_types))
        .route(&format!("{p}/vpn-gateways"), get(list_vgw).post(create_vgw))
        .route(
            &format!("{p}/vpn-gateways/{{id}}"),
            get(get_vgw).patch(update_vgw).delete(delete_vgw),
        )
        .route(
            &format!("{p}/customer-gateways"),
            get(list_cgw).post(create_cgw),
        )
        .route(
            &format!("{p}/customer-gateways/{{id}}"),
            get(get_cgw).patch(update_cgw).delete(delete_cgw),
        )
        .route(
            &format!("{p}/routing-policies"),
            get(list_rp).post(create_rp),
        )
        .route(
            &format!("{p}/routing-policies/{{id}}"),
            get(get_rp).patch(update_rp).delete(delete_rp),
        )
        .route(
            &format!("{p}/connections"),
            get(list_conn).post(create_conn),
        )
        .route(
            &format!("{p}/connections/{{id}}"),
            get(get_conn).patch(update_conn).delete(delete_conn),
        )
        .route(
            &format!("{p}/connections/{{id}}/{{action}}"),
            post(conn_action).get(conn_get_action),
        )
        .route(
            "/secret-manager/v1beta1/regions/{region}/secrets/{id}/versions/{revision}/access",
            get(access_secret),
        )
        .route(
            "/secret-manager/v1beta1/regions/{region}/secrets",
            post(create_secret),
        )
        .route(
            "/secret-manager/v1beta1/regions/{region}/secrets/{id}",
            get(get_secret),
        )
        .route(
            "/secret-manager/v1beta1/regions/{region}/secrets/{id}/versions",
            post(create_secret_version),
        )
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(
            st.live.get().api.body_timeout(),
            read_body_in_time,
        ))
        .layer(middleware::from_fn_with_state(st.clone(), auth))
        .layer(middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(st);
    Ok(r)
}

/// Serves the API on `listener` until `shutdown` resolves, then lets the
/// requests under way finish.
pub async fn serve_with_shutdown(
    config: Config,
    listener: tokio::net::TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_live(LiveConfig::new(config)?, listener, store, shutdown).await
}

/// [`serve_with_shutdown`] on a configuration that a reload can replace
/// (the listener's own limits stay those it started with).
pub async fn serve_live(
    live: LiveConfig,
    listener: tokio::net::TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let limits = live.get().api.clone();
    let app = router_live(live, store)?;
    serve_router(listener, app, &limits, shutdown).await;
    Ok(())
}

/// The accept loop: one permit of `max_connections` per connection, taken
/// before `accept` so the extra connections wait in the kernel's backlog
/// instead of costing us a task each; hyper's HTTP/1 connection with a
/// header read timeout.
async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &ApiSection,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // rather than spin.
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(
            TokioIo::new(WriteStallTimeout::new(stream, limits.body_timeout())),
            TowerToHyperService::new(app.clone()),
        );
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "API connection ended");
                    }
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}

/// Serves the API on `listener` (bound by the caller to `config.api.listen`)
/// until the task is dropped or an I/O error.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    store: Store,
) -> Result<(), ServeError> {
    serve_with_shutdown(config, listener, store, std::future::pending()).await
}

// --- handlers -------------------------------------------------------------

async fn list_types(
    State(st): State<AppState>,
    Path(region): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_region(&st, &region)?;
    ok(ops::list_vpn_gateway_types(
        &st.live.get(),
        &ListQuery::from_query(q.as_deref().unwrap_or("")),
    )?)
}

macro_rules! list_handler {
    ($name:ident, $op:path) => {
        async fn $name(
            State(st): State<AppState>,
            Extension(scope): Extension<Scope>,
            Path(region): Path<String>,
            RawQuery(q): RawQuery,
        ) -> ApiResult {
            check_region(&st, &region)?;
            let mut q = ListQuery::from_query(q.as_deref().unwrap_or(""));
            q.scope = scope;
            ok(st.store.read_async(move |tx| $op(tx, &q)).await?)
        }
    };
}
list_handler!(list_vgw, ops::list_vpn_gateways);
list_handler!(list_cgw, ops::list_customer_gateways);
list_handler!(list_rp, ops::list_routing_policies);
list_handler!(list_conn, ops::list_connections);

macro_rules! get_handler {
    ($name:ident, $kind:expr, $op:path) => {
        async fn $name(
            State(st): State<AppState>,
            Extension(scope): Extension<Scope>,
            Path((region, id)): Path<(String, String)>,
        ) -> ApiResult {
            check_region(&st, &region)?;
            ok(st
                .store
                .read_async(move |tx| {
                    scope.may_see(tx, $kind, &id)?;
                    $op(tx, &id)
                })
                .await?)
        }
    };
}
get_handler!(get_vgw, Owned::VpnGateway, ops::get_vpn_gateway);
get_handler!(get_cgw, Owned::CustomerGateway, ops::get_customer_gateway);
get_handler!(get_rp, Owned::RoutingPolicy, ops::get_routing_policy);
get_handler!(get_conn, Owned::Connection, ops::get_connection);

/// A create's body, confined to the caller's projects.
fn create_body(scope: &Scope, kind: Owned, body: &Bytes) -> Result<Value, ApiError> {
    let mut body = json_body(body)?;
    if body.is_null() {
        body = Value::Object(Default::default());
    }
    scope.creating_in(kind.resource(), &mut body)?;
    Ok(body)
}

macro_rules! create_handler {
    ($name:ident, $kind:expr, $op:path) => {
        async fn $name(
            State(st): State<AppState>,
            Extension(scope): Extension<Scope>,
            Path(region): Path<String>,
            body: Bytes,
        ) -> ApiResult {
            check_region(&st, &region)?;
            let req = ops::parse_body(create_body(&scope, $kind, &body)?)?;
            let cfg = st.live.get();
            ok(st.store.write_async(move |tx| $op(tx, &cfg, req)).await?)
        }
    };
}
create_handler!(create_vgw, Owned::VpnGateway, ops::create_vpn_gateway);
create_handler!(
    create_cgw,
    Owned::CustomerGateway,
    ops::create_customer_gateway
);
create_handler!(create_rp, Owned::RoutingPolicy, ops::create_routing_policy);
create_handler!(create_conn, Owned::Connection, ops::create_connection);

async fn update_vgw(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_region(&st, &region)?;
    let body = json_body(&body)?;
    let cfg = st.live.get();
    ok(st
        .store
        .write_async(move |tx| {
            scope.may_see(tx, Owned::VpnGateway, &id)?;
            ops::update_vpn_gateway(tx, &cfg, &id, body)
        })
        .await?)
}

async fn update_cgw(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_region(&st, &region)?;
    let req = ops::parse_body(json_body(&body)?)?;
    let cfg = st.live.get();
    ok(st
        .store
        .write_async(move |tx| {
            scope.may_see(tx, Owned::CustomerGateway, &id)?;
            ops::update_customer_gateway(tx, &cfg, &id, req)
        })
        .await?)
}

async fn update_rp(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_region(&st, &region)?;
    let body = json_body(&body)?;
    ok(st
        .store
        .write_async(move |tx| {
            scope.may_see(tx, Owned::RoutingPolicy, &id)?;
            ops::update_routing_policy(tx, &id, body)
        })
        .await?)
}

async fn update_conn(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_region(&st, &region)?;
    let body = json_body(&body)?;
    ok(st
        .store
        .write_async(move |tx| {
            scope.may_see(tx, Owned::Connection, &id)?;
            ops::update_connection(tx, &id, body)
        })
        .await?)
}

async fn delete_vgw(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id)): Path<(String, String)>,
) -> ApiResult {
    check_region(&st, &region)?;
    ok(st
        .store
        .write_async(move |tx| {
            scope.may_see(tx, Owned::VpnGateway, &id)?;
            ops::delete_vpn_gateway(tx, &id)
        })
        .await?)
}

macro_rules! delete_handler {
    ($name:ident, $kind:expr, $op:path) => {
        async fn $name(
            State(st): State<AppState>,
            Extension(scope): Extension<Scope>,
            Path((region, id)): Path<(String, String)>,
        ) -> ApiResult {
            check_region(&st, &region)?;
            st.store
                .write_async(move |tx| {
                    scope.may_see(tx, $kind, &id)?;
                    $op(tx, &id)
                })
                .await?;
            no_content()
        }
    };
}
delete_handler!(
    delete_cgw,
    Owned::CustomerGateway,
    ops::delete_customer_gateway
);
delete_handler!(delete_rp, Owned::RoutingPolicy, ops::delete_routing_policy);
delete_handler!(delete_conn, Owned::Connection, ops::delete_connection);

/// `GET .../connections/{id}/device-config?vendor=strongswan|bird|frr`:
/// the customer device's configuration, as text (it holds the PSK, so it is
/// behind the same authentication as everything else). `GET
/// .../connections/{id}/events`: see [`ops::connection_events`].
async fn conn_get_action(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id, action)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_region(&st, &region)?;
    let param = |name: &str| {
        form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if action == "events" {
        let (after, limit) = (param("after"), param("limit"));
        return ok(st
            .store
            .read_async(move |tx| {
                scope.may_see(tx, Owned::Connection, &id)?;
                ops::connection_events(tx, &id, after.as_deref(), limit.as_deref())
            })
            .await?);
    }
    if action != "device-config" {
        return Ok(fallback().await);
    }
    let vendor = param("vendor").ok_or_else(|| ApiError::required("vendor"))?;
    let cfg = st.live.get();
    let text = st
        .store
        .read_async(move |tx| {
            scope.may_see(tx, Owned::Connection, &id)?;
            crate::device_config::for_connection(tx, &cfg, &id, &vendor)
        })
        .await?;
    Ok((
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn conn_action(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    check_region(&st, &region)?;
    let body = json_body(&body)?;
    let cfg = st.live.get();
    // Every action acts on one connection of the caller's projects; what
    // it refers to (a routing policy, a secret) must be of the
    // connection's project (checked by the operation).
    type Op = Box<dyn FnOnce(&mut crate::store::Tx<'_>, &str) -> Result<Value, ApiError> + Send>;
    let op: Op = match action.as_str() {
        "renew-psk" => {
            let req = ops::parse_body(body)?;
            Box::new(move |tx, id| ops::renew_psk(tx, id, req))
        }
        "change-psk" => {
            let req = ops::parse_body(body)?;
            Box::new(move |tx, id| ops::change_psk(tx, id, req))
        }
        "set-routing-policy" => {
            let req = ops::parse_body(body)?;
            Box::new(move |tx, id| ops::set_routing_policy(tx, &cfg, id, req))
        }
        "detach-routing-policy" => {
            let req = ops::parse_body(body)?;
            Box::new(move |tx, id| ops::detach_routing_policy(tx, id, req))
        }
        "enable-route-propagation" => Box::new(|tx, id| ops::set_route_propagation(tx, id, true)),
        "disable-route-propagation" => Box::new(|tx, id| ops::set_route_propagation(tx, id, false)),
        _ => return Ok(fallback().await),
    };
    ok(st
        .store
        .write_async(move |tx| {
            scope.may_see(tx, Owned::Connection, &id)?;
            op(tx, &id)
        })
        .await?)
}

async fn access_secret(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id, revision)): Path<(String, String, String)>,
) -> ApiResult {
    check_region(&st, &region)?;
    ok(st
        .store
        .read_async(move |tx| {
            scope.may_see(tx, Owned::Secret, &id)?;
            ops::access_secret(tx, &id, &revision)
        })
        .await?)
}

async fn create_secret(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(region): Path<String>,
    body: Bytes,
) -> ApiResult {
    check_region(&st, &region)?;
    let req = ops::parse_body(create_body(&scope, Owned::Secret, &body)?)?;
    let cfg = st.live.get();
    ok(st
        .store
        .write_async(move |tx| ops::create_secret(tx, &cfg, req))
        .await?)
}

async fn get_secret(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id)): Path<(String, String)>,
) -> ApiResult {
    check_region(&st, &region)?;
    let cfg = st.live.get();
    ok(st
        .store
        .read_async(move |tx| {
            scope.may_see(tx, Owned::Secret, &id)?;
            ops::get_secret(tx, &cfg, &id)
        })
        .await?)
}

async fn create_secret_version(
    State(st): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((region, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_region(&st, &region)?;
    let req = ops::parse_body(json_body(&body)?)?;
    let cfg = st.live.get();
    ok(st
        .store
        .write_async(move |tx| {
            scope.may_see(tx, Owned::Secret, &id)?;
            ops::create_secret_version(tx, &cfg, &id, req)
        })
        .await?)
}
