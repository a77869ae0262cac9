//! Cursor pagination: `?limit=&cursor=` in, `{ "data": [...], "next_cursor": ... }` out.
//!
//! A cursor is opaque to clients: the base64url form of the sort key of the last item
//! returned. Lists sort by id, and ids are UUIDv7, so pages follow creation order and a
//! cursor stays valid while items are added.
//!
//! ```
//! use saas_core::page::{Page, PageQuery};
//!
//! let query = PageQuery { limit: Some(2), cursor: None };
//! let ids = vec!["a".to_string(), "b".into(), "c".into()];
//! // Fetch one more than the limit to know whether a next page exists.
//! let page = Page::from_overfetch(ids, query.limit().unwrap(), |id| id.clone());
//! assert_eq!(page.data, ["a", "b"]);
//! let next = PageQuery { limit: Some(2), cursor: page.next_cursor };
//! assert_eq!(next.after().unwrap().as_deref(), Some("b"));
//! ```

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError};

/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest page a client may ask for.
pub const MAX_LIMIT: u32 = 100;

/// The query of a list request.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size, or a 422 naming `limit` when it is out of range.
    pub fn limit(&self) -> Result<u32, Error> {
        match self.limit.unwrap_or(DEFAULT_LIMIT) {
            limit @ 1..=MAX_LIMIT => Ok(limit),
            _ => {
                Err(Error::validation([FieldError::new("limit", "out_of_range", format!("expected 1 to {MAX_LIMIT}"))]))
            }
        }
    }

    /// The sort key to continue after, or a 400 `invalid_cursor` for a cursor this server
    /// did not hand out.
    pub fn after(&self) -> Result<Option<String>, Error> {
        let Some(cursor) = &self.cursor else { return Ok(None) };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Some)
            .ok_or_else(|| Error::bad_request("invalid_cursor", "`cursor` must be a `next_cursor` this API returned"))
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items, in list order.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` items fetched in list order: the extra item,
    /// if present, only tells that a next page exists. `key` gives an item's sort key.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = has_more.then(|| items.last().map(|last| URL_SAFE_NO_PAD.encode(key(last)))).flatten();
        Self { data: items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_the_range_are_refused() {
        for limit in [0, MAX_LIMIT + 1] {
            let e = PageQuery { limit: Some(limit), cursor: None }.limit().unwrap_err();
            assert_eq!(e.status(), 422);
            assert_eq!(e.field_errors()[0].field, "limit");
        }
        assert_eq!(PageQuery::default().limit().unwrap(), DEFAULT_LIMIT);
    }

    #[test]
    fn foreign_cursors_are_refused() {
        let e = PageQuery { limit: None, cursor: Some("%%%".into()) }.after().unwrap_err();
        assert_eq!(e.code(), "invalid_cursor");
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let page = Page::from_overfetch(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(page.next_cursor, None);
        let page = Page::from_overfetch(Vec::<i32>::new(), 2, |n| n.to_string());
        assert_eq!(page.data, Vec::<i32>::new());
    }
}
