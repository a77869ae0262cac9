//! Typed, prefixed ids.
//!
//! Every entity id is a UUIDv7 (time-ordered, so indexes stay compact) written in the
//! [TypeID](https://github.com/jetify-com/typeid) format: a type prefix, `_`, and the 128 bits
//! in 26 characters of lowercase Crockford base32, e.g. `ten_01jdq3zbm6e8x9t0d8m0a7y7qk`.
//! The prefix makes a misplaced id obvious in logs and a parse error at the edge.
//!
//! ```
//! use saas_core::id::TenantId;
//!
//! let id = TenantId::new();
//! let text = id.to_string();
//! assert!(text.starts_with("ten_"));
//! assert_eq!(text.parse::<TenantId>().unwrap(), id);
//! assert!("usr_01jdq3zbm6e8x9t0d8m0a7y7qk".parse::<TenantId>().is_err());
//! ```
//!
//! Define an id type of your own with [`define_id!`](crate::define_id).

use std::fmt;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The prefix before `_` is not the one of this id type.
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix {
        /// The prefix this id type uses.
        expected: &'static str,
    },
    /// The part after the prefix is not 26 characters of lowercase Crockford base32.
    #[error("expected 26 lowercase base32 characters after the prefix")]
    BadSuffix,
}

/// Encodes 128 bits as 26 base32 characters (two leading zero bits pad it to 130).
fn encode_base32(value: u128) -> [u8; 26] {
    let mut out = [0; 26];
    for (i, char) in out.iter_mut().rev().enumerate() {
        *char = ALPHABET[((value >> (i * 5)) & 0x1f) as usize];
    }
    out
}

/// Decodes what [`encode_base32`] wrote; refuses anything else.
fn decode_base32(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    if bytes.len() != 26 || bytes[0] > b'7' {
        return None;
    }
    let mut value: u128 = 0;
    for &b in bytes {
        let digit = ALPHABET.iter().position(|&a| a == b)? as u128;
        value = (value << 5) | digit;
    }
    Some(value)
}

/// Formats `prefix_suffix`.
pub fn format_id(prefix: &str, uuid: uuid::Uuid, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write_id(prefix, uuid, |piece| f.write_str(std::str::from_utf8(piece).expect("ids are ASCII")))
}

/// Hands the pieces of `prefix_suffix` to `write` in order, without a heap buffer: request
/// ids are written on every request, also where there is no `Formatter`.
#[inline]
pub(crate) fn write_id(prefix: &str, uuid: uuid::Uuid, mut write: impl FnMut(&[u8]) -> fmt::Result) -> fmt::Result {
    let suffix = encode_base32(uuid.as_u128());
    write(prefix.as_bytes())?;
    write(b"_")?;
    write(&suffix)
}

/// Parses `prefix_suffix` into the UUID it carries.
pub fn parse_id(prefix: &'static str, text: &str) -> Result<uuid::Uuid, IdParseError> {
    let suffix = text
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or(IdParseError::WrongPrefix { expected: prefix })?;
    decode_base32(suffix).map(uuid::Uuid::from_u128).ok_or(IdParseError::BadSuffix)
}

/// Defines a typed, prefixed id: `define_id!(NoteId, "note", "A note.");`
///
/// The type gets `new()` (UUIDv7), `Display`/`FromStr` in TypeID form, serde as that string,
/// an OpenAPI schema, and sqlx encoding as `TEXT` so one column type works on SQLite and
/// PostgreSQL.
///
/// ```
/// saas_core::define_id!(NoteId, "note", "A note.");
/// let id = NoteId::new();
/// assert!(id.to_string().starts_with("note_"));
/// ```
#[macro_export]
macro_rules! define_id {
    ($name:ident, $prefix:literal, $doc:literal) => {
        #[doc = $doc]
        #[doc = ""]
        #[doc = concat!("Written as `", $prefix, "_` followed by 26 base32 characters.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($crate::reexport::uuid::Uuid);

        impl $name {
            /// The type prefix, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered (UUIDv7) id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self($crate::reexport::uuid::Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: $crate::reexport::uuid::Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> $crate::reexport::uuid::Uuid {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $crate::id::format_id($prefix, self.0, f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::IdParseError;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                $crate::id::parse_id($prefix, s).map(Self)
            }
        }

        impl $crate::reexport::serde::Serialize for $name {
            fn serialize<S: $crate::reexport::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> $crate::reexport::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::reexport::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err($crate::reexport::serde::de::Error::custom)
            }
        }

        impl $crate::reexport::utoipa::PartialSchema for $name {
            fn schema() -> $crate::reexport::utoipa::openapi::RefOr<
                $crate::reexport::utoipa::openapi::schema::Schema,
            > {
                $crate::id::id_schema($prefix)
            }
        }

        impl $crate::reexport::utoipa::ToSchema for $name {}

        impl $crate::reexport::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut $crate::reexport::schemars::SchemaGenerator) -> $crate::reexport::schemars::Schema {
                $crate::id::id_json_schema($prefix)
            }
        }

        impl $crate::reexport::sqlx::Type<$crate::reexport::sqlx::Any> for $name {
            fn type_info() -> $crate::reexport::sqlx::any::AnyTypeInfo {
                <String as $crate::reexport::sqlx::Type<$crate::reexport::sqlx::Any>>::type_info()
            }
        }

        impl<'q> $crate::reexport::sqlx::Encode<'q, $crate::reexport::sqlx::Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <$crate::reexport::sqlx::Any as $crate::reexport::sqlx::Database>::ArgumentBuffer<'q>,
            ) -> ::std::result::Result<
                $crate::reexport::sqlx::encode::IsNull,
                $crate::reexport::sqlx::error::BoxDynError,
            > {
                <String as $crate::reexport::sqlx::Encode<'q, $crate::reexport::sqlx::Any>>::encode(
                    self.to_string(),
                    buf,
                )
            }
        }

        impl<'r> $crate::reexport::sqlx::Decode<'r, $crate::reexport::sqlx::Any> for $name {
            fn decode(
                value: <$crate::reexport::sqlx::Any as $crate::reexport::sqlx::Database>::ValueRef<'r>,
            ) -> ::std::result::Result<Self, $crate::reexport::sqlx::error::BoxDynError> {
                let text =
                    <&str as $crate::reexport::sqlx::Decode<'r, $crate::reexport::sqlx::Any>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    };
}

/// The JSON Schema shared by every id type (for event schemas): a string with the prefix.
pub fn id_json_schema(prefix: &'static str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": format!("^{prefix}_[0-7][0-9a-hjkmnp-tv-z]{{25}}$"),
    })
}

/// The OpenAPI schema shared by every id type: a string with the type's prefix.
pub fn id_schema(prefix: &'static str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^{prefix}_[0-7][0-9a-hjkmnp-tv-z]{{25}}$")))
        .examples([serde_json::Value::String(format!("{prefix}_01jdq3zbm6e8x9t0d8m0a7y7qk"))])
        .into()
}

define_id!(TenantId, "ten", "A tenant: one customer organisation and everything it owns.");
define_id!(UserId, "usr", "A user account inside a tenant.");
define_id!(EventId, "evt", "A domain event.");
define_id!(RequestId, "req", "One HTTP request, echoed in `X-Request-Id`.");
define_id!(SubscriptionId, "sub", "A tenant's subscription to a plan (saas-billing).");
define_id!(InvoiceId, "inv", "An invoice issued to a tenant (saas-billing).");
define_id!(PaymentId, "pay", "One payment attempt against an invoice (saas-billing).");
define_id!(NotificationId, "ntf", "A notification to one user over one channel (saas-notify).");
define_id!(TemplateId, "tpl", "A notification template of a tenant, for one channel and locale (saas-notify).");
define_id!(ReportId, "rpt", "A generated report (saas-analytics).");
define_id!(DashboardId, "dsh", "An analytics dashboard (saas-analytics).");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_json() {
        let id = UserId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 4 + 26);
        assert_eq!(text.parse::<UserId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
    }

    #[test]
    fn matches_the_typeid_spec_vectors() {
        // From the TypeID spec's valid.yml.
        let id = parse_id("prefix", "prefix_01h455vb4pex5vsknk084sn02q").unwrap();
        assert_eq!(id.to_string(), "01890a5d-ac96-774b-bcce-b302099a8057");
        let max = parse_id("x", "x_7zzzzzzzzzzzzzzzzzzzzzzzzz").unwrap();
        assert_eq!(max, uuid::Uuid::max());
    }

    #[test]
    fn refuses_wrong_prefix_and_bad_suffix() {
        let id = TenantId::new().to_string();
        assert_eq!(id.parse::<UserId>(), Err(IdParseError::WrongPrefix { expected: "usr" }));
        for bad in [
            "ten_",
            "ten_8zzzzzzzzzzzzzzzzzzzzzzzzz", // overflows 128 bits
            "ten_01h455vb4pex5vsknk084sn02",  // 25 chars
            "ten_01H455VB4PEX5VSKNK084SN02Q", // upper case
            "ten_01h455vb4pex5vsknk084sn0uq", // `u` is not in the alphabet
        ] {
            assert_eq!(bad.parse::<TenantId>(), Err(IdParseError::BadSuffix), "{bad}");
        }
        assert!(serde_json::from_str::<TenantId>("\"nope\"").is_err());
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = EventId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = EventId::new();
        assert!(a.to_string() < b.to_string());
    }
}
