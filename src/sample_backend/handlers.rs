//! One function per sample-backend endpoint: request parts (and body) in, a response or a
//! [`Failure`] out. Method checks and path decoding happened in `mod.rs`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::HOST;
use http::request::Parts;
use http::uri::Authority;
use http::{Method, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::batch;
use super::form::{self, parse_form, single};
use super::respond::{self, BackendResponse, Failure};
use super::store::{IdKind, Mode, Store};
use super::MAX_BODY_BYTES;

/// Characters kept as they are when a client code is put back into a URL path.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The prefix of single-update parameters that set an attribute.
const ATTRIBUTE_PREFIX: &str = "profile.";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `POST /m2/{client}[/v2]/profile/batchUpdate`.
pub async fn batch_update<B>(
    store: &Store,
    mode: Mode,
    client: &str,
    parts: &Parts,
    body: B,
) -> Result<BackendResponse, Failure>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let body = read_body(body, MAX_BODY_BYTES).await?;
    let batch = batch::parse_body(&body).map_err(|error| Failure::BadRequest(error.to_string()))?;
    let status = store.apply_batch(client, &batch, mode);
    let url = format!(
        "http://{}/m2/{}/profile/batchStatus?batchId={}",
        host(parts),
        utf8_percent_encode(client, PATH_SEGMENT),
        form_urlencoded::byte_serialize(status.batch_id.as_bytes()).collect::<String>()
    );
    Ok(respond::batch_submitted(&url))
}

/// `GET /m2/{client}[/v2]/profile/batchStatus?batchId=…`.
pub fn batch_status(
    store: &Store,
    client: &str,
    parts: &Parts,
) -> Result<BackendResponse, Failure> {
    let query = query_pairs(parts)?;
    let batch_id = single(&query, "batchId")
        .map_err(|_| Failure::BadRequest("batchId is given more than once".into()))?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Failure::BadRequest("missing batchId query parameter".into()))?;
    let status = store
        .batch_status(client, batch_id)
        .ok_or(Failure::NotFound("no such batch"))?;
    Ok(respond::batch_status(&status))
}

/// `GET|POST /m2/{client}/profile/update?mbox3rdPartyId=…&profile.attr=v`: parameters come
/// from the query string and, for POST, also from a form body (query first, body after;
/// a later value of the same attribute wins).
pub async fn update<B>(
    store: &Store,
    client: &str,
    parts: &Parts,
    body: B,
) -> Result<BackendResponse, Failure>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut params = query_pairs(parts)?;
    if parts.method == Method::POST {
        let body = read_body(body, MAX_BODY_BYTES).await?;
        params.extend(form::parse_form_bytes(&body).map_err(bad_request)?);
    }

    let mut ids = params
        .iter()
        .filter_map(|(name, value)| Some((IdKind::from_name(name)?, value.as_str())));
    let (kind, id) = ids
        .next()
        .ok_or_else(|| Failure::BadRequest("missing mbox3rdPartyId or mboxPC parameter".into()))?;
    if ids.next().is_some() {
        return Err(Failure::BadRequest(
            "give exactly one profile id (mbox3rdPartyId or mboxPC)".into(),
        ));
    }
    if id.is_empty() {
        return Err(Failure::BadRequest("empty profile id".into()));
    }

    let mut updates = Vec::new();
    for (name, value) in &params {
        if let Some(attribute) = name.strip_prefix(ATTRIBUTE_PREFIX) {
            if attribute.is_empty() {
                return Err(Failure::BadRequest(
                    "empty attribute name after profile.".into(),
                ));
            }
            updates.push((attribute, value.as_str()));
        }
    }
    let created = store.upsert(client, kind, id, updates);
    Ok(respond::json(
        StatusCode::OK,
        &json!({ "success": true, "created": created }),
    ))
}

/// `GET /rest/v1/profiles/{pcId}?client=…` and `/rest/v1/profiles/thirdPartyId/{id}?client=…`.
pub fn fetch(
    store: &Store,
    kind: IdKind,
    id: &str,
    parts: &Parts,
) -> Result<BackendResponse, Failure> {
    let query = query_pairs(parts)?;
    let client = single(&query, "client")
        .map_err(|_| Failure::BadRequest("client is given more than once".into()))?
        .filter(|client| !client.is_empty())
        .ok_or_else(|| Failure::BadRequest("missing client query parameter".into()))?;
    let profile = store
        .profile(client, kind, id)
        .ok_or(Failure::NotFound("profile not found"))?;
    let (pc_id, third_party_id) = match kind {
        IdKind::PcId => (Value::from(id), Value::Null),
        IdKind::ThirdPartyId => (Value::Null, Value::from(id)),
    };
    let profile: BTreeMap<String, Value> = profile
        .into_iter()
        .map(|(name, value)| (name, Value::from(value)))
        .collect();
    Ok(respond::json(
        StatusCode::OK,
        &json!({
            "client": client,
            "pcId": pc_id,
            "thirdPartyId": third_party_id,
            "profile": profile,
        }),
    ))
}

/// Reads a whole body, refusing more than `limit` bytes (up front when the length is known).
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Failure>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if body.size_hint().lower() > limit_u64 {
        return Err(Failure::BodyTooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Failure::BodyTooLarge),
        Err(error) => {
            tracing::debug!(%error, "sample backend could not read a request body");
            Err(Failure::BodyUnreadable)
        }
    }
}

/// The host for URLs pointing back at this service: the `Host` header (which the gateway
/// forwards unchanged), else the request-target's authority (HTTP/2), else `localhost`.
/// Anything that is not a plain `host[:port]` is ignored rather than echoed.
pub fn host(parts: &Parts) -> String {
    let plain = |authority: &Authority| !authority.as_str().contains('@');
    parts
        .headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<Authority>().ok())
        .filter(plain)
        .or_else(|| parts.uri.authority().filter(|a| plain(a)).cloned())
        .map_or_else(|| "localhost".to_owned(), |authority| authority.to_string())
}

fn query_pairs(parts: &Parts) -> Result<Vec<(String, String)>, Failure> {
    parse_form(parts.uri.query().unwrap_or_default(), "query string").map_err(bad_request)
}

fn bad_request(error: form::FormError) -> Failure {
    Failure::BadRequest(error.to_string())
}
