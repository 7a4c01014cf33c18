//! `webhook` `{url, body}`: POSTs `body` as JSON to `url`, whose host must
//! be on `queue.webhook_allowed_hosts`, so that tasks cannot be used to
//! reach arbitrary hosts from inside the network. 2xx succeeds; 5xx, 429,
//! timeouts and connection failures are retried; any other answer is final.

use std::collections::HashSet;

use async_trait::async_trait;
use reqwest::{Url, redirect};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{TaskError, TaskHandler, payload};
use crate::config::QueueSettings;
use crate::domain::{InvalidInput, Task};

pub struct Webhook {
    client: reqwest::Client,
    /// Lower-case host names and addresses, IPv6 without brackets.
    allowed_hosts: HashSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookPayload {
    url: String,
    #[serde(default)]
    body: Value,
}

impl Webhook {
    const SHAPE: &str = "webhook takes {\"url\": an http(s) URL, \"body\": any JSON}";

    pub fn new(settings: &QueueSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.webhook_timeout())
            // A redirect could lead off the allowlist.
            .redirect(redirect::Policy::none())
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let allowed_hosts = settings
            .webhook_allowed_hosts
            .iter()
            .map(|host| host.as_str().trim_matches(['[', ']']).to_ascii_lowercase())
            .collect();
        Ok(Self {
            client,
            allowed_hosts,
        })
    }

    fn parse(&self, value: &Value) -> Result<(Url, Value), InvalidInput> {
        let WebhookPayload { url, body } = payload(value, Self::SHAPE)?;
        let url = Url::parse(&url).map_err(|_| InvalidInput::new("payload", Self::SHAPE))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidInput::new("payload", Self::SHAPE));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidInput::new(
                "payload",
                "the webhook URL must not carry credentials",
            ));
        }
        let host = url
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase());
        if !host.is_some_and(|h| self.allowed_hosts.contains(&h)) {
            return Err(InvalidInput::new(
                "payload",
                "the webhook URL's host is not on queue.webhook_allowed_hosts",
            ));
        }
        Ok((url, body))
    }
}

#[async_trait]
impl TaskHandler for Webhook {
    fn validate(&self, payload: &Value) -> Result<(), InvalidInput> {
        self.parse(payload).map(drop)
    }

    async fn run(&self, task: &Task) -> Result<Value, TaskError> {
        // Checked again: the allowlist may have changed since enqueue.
        let (url, body) = self
            .parse(&task.payload)
            .map_err(|e| TaskError::Reject(e.to_string()))?;
        let response = self
            .client
            .post(url)
            .json(&body)
            // The receiver may see a task more than once (at least once):
            // the task id lets it drop repeats.
            .header("idempotency-key", task.id.to_string())
            .header("x-tollgate-attempt", task.attempts.to_string())
            .send()
            .await
            .map_err(|e| {
                let why = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                TaskError::Retry(format!("the webhook call {why}"))
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(json!({ "status": status.as_u16() }))
        } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(TaskError::Retry(format!("the webhook answered {status}")))
        } else {
            Err(TaskError::Reject(format!("the webhook answered {status}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn webhook(allowed: &[&str]) -> Webhook {
        let mut settings = Settings::embedded_default().queue;
        settings.webhook_allowed_hosts = allowed.iter().map(|h| h.parse().unwrap()).collect();
        Webhook::new(&settings).unwrap()
    }

    #[test]
    fn only_allowlisted_hosts_over_http_can_be_called() {
        let hook = webhook(&["hooks.example.com", "127.0.0.1", "[::1]"]);
        for ok in [
            "https://hooks.example.com/x",
            "http://HOOKS.example.com:8080/y?z=1",
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
        ] {
            assert!(hook.validate(&json!({ "url": ok })).is_ok(), "{ok}");
        }
        for bad in [
            "https://evil.example.com/",
            "https://hooks.example.com.evil.net/",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "not a url",
        ] {
            assert!(hook.validate(&json!({ "url": bad })).is_err(), "{bad}");
        }
        assert!(
            webhook(&[])
                .validate(&json!({ "url": "http://127.0.0.1/" }))
                .is_err()
        );
    }
}
