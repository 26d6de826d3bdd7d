//! [`SearchValue`], the value of one search attribute set with
//! [`Context::upsert_search_attributes`](crate::Context::upsert_search_attributes).

use serde_json::Value;

/// The value of a search attribute: what `list` can filter runs by.
/// [`SearchValue::Null`] removes the attribute.
///
/// ```
/// use weft_sdk::SearchValue;
/// assert_eq!(SearchValue::from("acme"), SearchValue::Text("acme".to_owned()));
/// assert_eq!(SearchValue::from(1200), SearchValue::Int(1200));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum SearchValue {
    Text(String),
    Int(i64),
    /// Must be finite: JSON has no NaN or infinity, so such a value is
    /// skipped with a warning in the run's log.
    Float(f64),
    Bool(bool),
    /// Removes the attribute.
    Null,
}

impl SearchValue {
    /// The JSON value, or `None` for a float JSON cannot hold.
    pub(crate) fn to_json(&self) -> Option<Value> {
        Some(match self {
            SearchValue::Text(text) => Value::from(text.as_str()),
            SearchValue::Int(n) => Value::from(*n),
            SearchValue::Float(x) => Value::Number(serde_json::Number::from_f64(*x)?),
            SearchValue::Bool(b) => Value::from(*b),
            SearchValue::Null => Value::Null,
        })
    }
}

impl From<&str> for SearchValue {
    fn from(text: &str) -> Self {
        SearchValue::Text(text.to_owned())
    }
}

impl From<String> for SearchValue {
    fn from(text: String) -> Self {
        SearchValue::Text(text)
    }
}

impl From<i64> for SearchValue {
    fn from(n: i64) -> Self {
        SearchValue::Int(n)
    }
}

impl From<i32> for SearchValue {
    fn from(n: i32) -> Self {
        SearchValue::Int(n.into())
    }
}

impl From<u32> for SearchValue {
    fn from(n: u32) -> Self {
        SearchValue::Int(n.into())
    }
}

impl From<f64> for SearchValue {
    fn from(x: f64) -> Self {
        SearchValue::Float(x)
    }
}

impl From<bool> for SearchValue {
    fn from(b: bool) -> Self {
        SearchValue::Bool(b)
    }
}
