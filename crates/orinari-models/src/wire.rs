//! Lenient, borrowing pieces for reading upstream JSON without building a
//! `serde_json::Value` for every streamed chunk.
//!
//! Upstreams differ in what they put where; a field of an unexpected type is
//! read as absent (as `Value::as_str` and friends did), never as a broken
//! chunk. Strings borrow from the chunk unless they hold escapes.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::Message;

/// Numbers, booleans, arrays and objects where a scalar of another type
/// was expected: consumed and read as absent.
macro_rules! other_values_are_absent {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// A string, or absent when the field holds anything else (null, a number, an object).
#[derive(Debug, Default)]
pub(crate) struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            other_values_are_absent!();
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A non-negative integer, or absent when the field holds anything else.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Count(pub Option<u64>);

impl Count {
    /// As a token count (saturating).
    pub(crate) fn tokens(self) -> Option<u32> {
        self.0.map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Count(Some(v)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Count(None))
            }
            other_values_are_absent!();
        }
        d.deserialize_any(V)
    }
}

/// The first element of an array (the rest are skipped without being
/// built), or absent when the field is empty or not an array.
#[derive(Debug)]
pub(crate) struct First<T>(pub Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<T>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(First(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(First(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(First(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(First(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(First(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(First(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(First(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(First(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An `error` field: present whatever its shape (an object, a string, …),
/// with its `message` when it has one. `null` counts as no error.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ErrorBody<'a> {
    #[serde(default, borrow)]
    pub message: Text<'a>,
}

/// Reads any `error` value as an [`ErrorBody`] (see there).
#[derive(Debug, Default)]
pub(crate) struct AnyError<'a>(pub Option<ErrorBody<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for AnyError<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = AnyError<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ErrorBody::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|e| AnyError(Some(e)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AnyError(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AnyError(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyError(Some(ErrorBody::default())))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(AnyError(Some(ErrorBody::default())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(AnyError(Some(ErrorBody::default())))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(AnyError(Some(ErrorBody::default())))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(AnyError(Some(ErrorBody::default())))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(AnyError(Some(ErrorBody::default())))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl AnyError<'_> {
    /// The error to report, if the chunk carried one.
    pub(crate) fn to_model_error(&self) -> Option<crate::ModelError> {
        let e = self.0.as_ref()?;
        let m = e.message.as_str().unwrap_or("an error event");
        Some(crate::ModelError::Upstream(
            m.chars().take(orinari_upstream::MAX_REASON_CHARS).collect(),
        ))
    }
}

/// Chat messages in OpenAI's shape, written straight from the request
/// without an intermediate list: `role`, `content` (text, parts when there
/// are images, null for an assistant turn that only calls tools), and
/// `name`, `tool_calls`, `tool_call_id` when set.
pub struct Messages<'a>(pub(crate) &'a [Message]);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(OpenAiMessage))
    }
}

/// One message in OpenAI's shape.
struct OpenAiMessage<'a>(&'a Message);

impl Serialize for OpenAiMessage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let m = self.0;
        let mut out = s.serialize_map(None)?;
        out.serialize_entry("role", &m.role)?;
        if !m.parts.is_empty() {
            out.serialize_entry("content", &m.parts)?;
        } else if m.content.is_empty() && !m.tool_calls.is_empty() {
            out.serialize_entry("content", &())?;
        } else {
            out.serialize_entry("content", &m.content)?;
        }
        if let Some(name) = &m.name {
            out.serialize_entry("name", name)?;
        }
        if !m.tool_calls.is_empty() {
            out.serialize_entry("tool_calls", &m.tool_calls)?;
        }
        if let Some(id) = &m.tool_call_id {
            out.serialize_entry("tool_call_id", id)?;
        }
        out.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow)]
        text: Text<'a>,
        #[serde(default)]
        count: Count,
        #[serde(default)]
        first: First<u32>,
        #[serde(default, borrow)]
        error: AnyError<'a>,
    }

    #[test]
    fn unexpected_types_read_as_absent() {
        let p: Probe<'_> = serde_json::from_str(
            r#"{"text":[1,{"a":2}],"count":"7","first":{"x":1},"error":null}"#,
        )
        .unwrap();
        assert!(p.text.0.is_none() && p.count.0.is_none() && p.first.0.is_none());
        assert!(p.error.to_model_error().is_none());
        let p: Probe<'_> =
            serde_json::from_str(r#"{"text":"a\"b","count":3,"first":[4,[5],6],"error":"x"}"#)
                .unwrap();
        assert_eq!(p.text.as_str(), Some("a\"b"));
        assert_eq!((p.count.tokens(), p.first.0), (Some(3), Some(4)));
        assert_eq!(
            p.error.to_model_error(),
            Some(crate::ModelError::Upstream("an error event".into()))
        );
    }

    #[test]
    fn plain_strings_are_borrowed() {
        let p: Probe<'_> = serde_json::from_str(r#"{"text":"plain"}"#).unwrap();
        assert!(matches!(p.text.0, Some(Cow::Borrowed("plain"))));
    }
}
