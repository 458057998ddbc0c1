//! One HTTP exchange of the Fleet API: the [`Transport`] a client posts
//! through, and Hearth's own plain-HTTP one (`ureq`), for a coordinator on a
//! private network; apps bring their platform's HTTPS stack instead
//! (`FleetTransport`).

use std::time::Duration;

/// Why one HTTP exchange failed.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportError {
    Timeout,
    /// A non-2xx status.
    Status(u16),
    /// 429 or 503 with a `Retry-After`: the server asks for this pause
    /// before the next try.
    Throttled {
        status: u16,
        retry_after: Duration,
    },
    /// A reply body above the transport's bound.
    TooLarge,
    /// Connection-level failure.
    Io(String),
}

/// One request, one reply: an app may implement this over its own HTTP
/// stack (OkHttp, URLSession); tests put a fake here.
pub trait Transport: Send + Sync {
    /// POSTs `body` to `path` (such as `/v1/fleet/pull-messages`) with
    /// `headers` and returns the body of a 2xx reply, all within `timeout`.
    fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError>;
}

/// [`Transport`] over plain HTTP/1.1 (ureq). `base` is like
/// `http://127.0.0.1:9092`. TLS comes with ureq's rustls feature later.
pub struct HttpTransport {
    base: String,
    agent: ureq::Agent,
    max_reply_bytes: u64,
}

impl HttpTransport {
    pub fn new(base: &str) -> HttpTransport {
        let config = ureq::Agent::config_builder().http_status_as_error(false).build();
        HttpTransport {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
            max_reply_bytes: 64 << 20,
        }
    }
}

impl Transport for HttpTransport {
    fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/protobuf")
            .header("accept", "application/protobuf");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let map = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => TransportError::Timeout,
            ureq::Error::StatusCode(s) => TransportError::Status(s),
            ureq::Error::BodyExceedsLimit(_) => TransportError::TooLarge,
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => TransportError::Timeout,
            other => TransportError::Io(other.to_string()),
        };
        let mut reply = req.config().timeout_global(Some(timeout)).build().send(body).map_err(map)?;
        let status = reply.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = reply.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(retry_after);
            return Err(match retry_after {
                Some(retry_after) if status == 429 || status == 503 => {
                    TransportError::Throttled { status, retry_after }
                }
                _ => TransportError::Status(status),
            });
        }
        reply.body_mut().with_config().limit(self.max_reply_bytes).read_to_vec().map_err(map)
    }
}

/// A `Retry-After` header's delay-seconds form (RFC 9110 10.2.3); its
/// HTTP-date form is left alone (None): the client's own backoff applies.
pub fn retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // A number too long to parse is "a very long time".
    Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX).min(86_400)))
}
