//! The headers every response carries so that a browser holds the dashboard to what it
//! is: its own scripts only, never framed, never sniffed, no referrer to tile servers,
//! and API answers never kept in a cache.

use axum::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::Response;

/// Scripts, styles and connections from the hub only; images also from `https:`, where
/// the map tiles of `config.js` come from. Leaflet sets styles through the DOM, which
/// `style-src` does not govern, so no `'unsafe-inline'` is needed.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: https:; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
     object-src 'none'";

/// Adds the protective headers to any response that does not set its own.
pub async fn protective(mut res: Response) -> Response {
    let h = res.headers_mut();
    let set = [
        (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in set {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    res
}

/// API answers carry people's data: no cache along the way may keep them.
pub async fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
