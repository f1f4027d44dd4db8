//! A small blocking client for the world. Blocking on purpose: RocketMQ
//! listeners are synchronous callbacks, and a blocking client is safe to call
//! from them and from async code alike (it owns no runtime).

use std::time::Duration;

use serde_json::Value;

use crate::Env;

/// A call to the world that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The world answered, but not with 2xx (429 rate limited, 409 conflict,
    /// 503 injected failure, ...). `body` is its JSON answer.
    #[error("world answered {status} to {path}: {body}")]
    Status {
        path: String,
        status: u16,
        body: Value,
    },
    #[error("world unreachable at {path}: {detail}")]
    Transport { path: String, detail: String },
}

impl WorldError {
    pub fn status(&self) -> Option<u16> {
        match self {
            WorldError::Status { status, .. } => Some(*status),
            WorldError::Transport { .. } => None,
        }
    }
}

#[derive(Clone)]
pub struct WorldClient {
    base: String,
    instance: String,
    agent: ureq::Agent,
}

impl WorldClient {
    pub fn new(base: impl Into<String>, instance: impl Into<String>) -> WorldClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        WorldClient {
            base: base.into().trim_end_matches('/').to_string(),
            instance: instance.into(),
            agent,
        }
    }

    pub fn from_env(env: &Env) -> WorldClient {
        WorldClient::new(&env.world_url, &env.instance)
    }

    /// POST `body` to `path` (e.g. `/ledger/debit`), tagged with `request_id`
    /// (the world records it with the effect). 2xx answers return their JSON.
    pub fn post(&self, path: &str, request_id: &str, body: &Value) -> Result<Value, WorldError> {
        let resp = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("X-Dojo-Instance", &self.instance)
            .header("X-Request-Id", request_id)
            .send_json(body);
        self.answer(path, resp)
    }

    pub fn get(&self, path: &str) -> Result<Value, WorldError> {
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("X-Dojo-Instance", &self.instance)
            .call();
        self.answer(path, resp)
    }

    fn answer(
        &self,
        path: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, WorldError> {
        let mut resp = resp.map_err(|e| WorldError::Transport {
            path: path.to_string(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(WorldError::Status {
                path: path.to_string(),
                status,
                body,
            })
        }
    }
}
