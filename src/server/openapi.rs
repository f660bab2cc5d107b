//! The OpenAPI 3 document, generated from the handlers' annotations and
//! the `api` types, served at `/api/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

use super::device;
use super::routes::{
    access, access_keys, audit, auth, destinations, grants, groups, identities, providers,
    sessions, tokens, users,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "infra",
        description = "Access to Kubernetes clusters through OpenID Connect"
    ),
    paths(
        auth::version,
        auth::whoami,
        auth::login,
        auth::logout,
        device::api::create,
        device::api::status,
        users::list,
        users::get,
        users::create,
        users::update,
        users::remove,
        groups::list,
        groups::get,
        groups::create,
        groups::remove,
        groups::members,
        groups::update_members,
        identities::list,
        identities::get,
        identities::create,
        identities::remove,
        identities::get_oidc_auth,
        identities::put_oidc_auth,
        identities::delete_oidc_auth,
        identities::oidc_auth_login,
        identities::renew_token,
        identities::revoke_token,
        grants::list,
        grants::get,
        grants::create,
        grants::remove,
        grants::report_states,
        destinations::list,
        destinations::get,
        destinations::create,
        destinations::update,
        destinations::remove,
        access_keys::list,
        access_keys::create,
        access_keys::remove,
        providers::list,
        providers::get,
        providers::create,
        providers::update,
        providers::remove,
        audit::list,
        tokens::create,
        access::explain,
        access::check,
        sessions::create,
        sessions::append,
        sessions::end,
        sessions::list,
        sessions::get,
        sessions::recording,
    ),
    components(schemas(crate::api::ErrorResponse, crate::api::FieldError))
)]
pub struct ApiDoc;

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is documented, with each of its methods.
    #[test]
    fn every_route_is_in_the_document() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for route in crate::server::routes::api_routes() {
            let item = paths
                .get(route.path)
                .unwrap_or_else(|| panic!("{} is not in the OpenAPI document", route.path));
            for m in route.methods {
                assert!(
                    item.get(*m).is_some(),
                    "{} {} is not documented",
                    m,
                    route.path
                );
            }
        }
        assert!(paths.len() >= crate::server::routes::api_routes().len());
    }
}
