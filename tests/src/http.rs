//! JSON over HTTP for the API tests.

use reqwest::StatusCode;
use serde_json::Value;

/// POSTs `body`; the status and the JSON answer (`Null` when it is not JSON).
pub async fn post(c: &reqwest::Client, url: &str, body: Value) -> (StatusCode, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// GETs `url`; the status and the JSON answer (`Null` when it is not JSON).
pub async fn get(c: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}
