//! The reference [`SyncTransport`]: a WebDAV collection (RFC 4918), one
//! file per blob, over plain HTTP/1.1 (ureq), for apps that have no backend
//! of their own yet and for the tests (lighttpd's `mod_webdav` on
//! 127.0.0.1). `put` is PUT, `get` GET, `delete` DELETE, and `list` a
//! PROPFIND of depth 1 whose `getcontentlength` gives each size (sent over
//! a plain connection of its own, as ureq sends only RFC 9110's methods). The
//! server sees only what any backend sees: names and sealed bytes. TLS and
//! credentials are the app's: put a TLS-terminating proxy in front, or
//! implement the trait over the platform's HTTP stack.

use std::time::Duration;

use super::transport::{SyncBlob, SyncTransport, SyncTransportError};

/// The largest PROPFIND answer read (about 50,000 blobs).
pub const MAX_LISTING: u64 = 16 << 20;
/// The largest blob read.
const MAX_BLOB: u64 = 1 << 20;

/// A WebDAV collection as sync's backend. `base` is the collection's URL,
/// like `http://127.0.0.1:8080/hearth/`.
pub struct WebDavTransport {
    base: String,
    agent: ureq::Agent,
    timeout: Duration,
}

impl WebDavTransport {
    pub fn new(base: &str, timeout: Duration) -> WebDavTransport {
        let config = ureq::Agent::config_builder().http_status_as_error(false).build();
        WebDavTransport {
            base: format!("{}/", base.trim_end_matches('/')),
            agent: ureq::Agent::new_with_config(config),
            timeout,
        }
    }

    fn url(&self, name: &str) -> Result<String, SyncTransportError> {
        // Hearth's names are plain; anything else is not asked for.
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(SyncTransportError::Refused { reason: "a blob name WebDAV would need to escape".into() });
        }
        Ok(format!("{}{name}", self.base))
    }

    fn run(
        &self,
        method: &[u8],
        url: &str,
        body: Vec<u8>,
    ) -> Result<ureq::http::Response<ureq::Body>, SyncTransportError> {
        let method = ureq::http::Method::from_bytes(method).expect("an HTTP method");
        let request = ureq::http::Request::builder().method(method).uri(url);
        let request = request.body(body).map_err(|e| unavailable(e.to_string()))?;
        let request = self.agent.configure_request(request).timeout_global(Some(self.timeout)).build();
        self.agent.run(request).map_err(|e| unavailable(e.to_string()))
    }
}

impl WebDavTransport {
    /// PROPFIND of depth 1 on the collection, over a connection of its
    /// own: ureq sends only the methods of RFC 9110. HTTP/1.0, so the
    /// answer comes whole, not chunked, and ends with the connection.
    fn propfind(&self) -> Result<Vec<u8>, SyncTransportError> {
        use std::io::{Read, Write};
        let rest = self
            .base
            .strip_prefix("http://")
            .ok_or_else(|| SyncTransportError::Refused { reason: "only http:// URLs".into() })?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let address = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
        let io = |e: std::io::Error| unavailable(e.to_string());
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&address)
            .map_err(io)?
            .next()
            .ok_or_else(|| unavailable("no address".into()))?;
        // The whole exchange within the timeout, as ureq's global timeout
        // bounds the other calls: each read waits at most what is left, so
        // a server that drips its answer cannot hold the sync.
        let deadline = std::time::Instant::now() + self.timeout;
        let left = || {
            deadline
                .checked_duration_since(std::time::Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| unavailable(format!("the listing took longer than {:?}", self.timeout)))
        };
        let mut stream = std::net::TcpStream::connect_timeout(&addr, left()?).map_err(io)?;
        stream.set_write_timeout(Some(left()?)).map_err(io)?;
        write!(stream, "PROPFIND {path} HTTP/1.0\r\nHost: {host}\r\nDepth: 1\r\nContent-Length: 0\r\n\r\n")
            .map_err(io)?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            stream.set_read_timeout(Some(left()?)).map_err(io)?;
            let n = match stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => read.map_err(io)?,
            };
            if n == 0 {
                return Ok(reply);
            }
            if reply.len() as u64 + n as u64 > MAX_LISTING {
                return Err(unavailable("a listing larger than the bound".into()));
            }
            reply.extend_from_slice(&chunk[..n]);
        }
    }
}

/// An HTTP/1.x answer read to the end of its connection: its status and
/// its body (what follows the headers).
pub fn parse_reply(reply: &[u8]) -> Result<(u16, &[u8]), ListingError> {
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n").ok_or(ListingError::Malformed("no end of headers"))?;
    let head = std::str::from_utf8(&reply[..end]).map_err(|_| ListingError::Malformed("headers not UTF-8"))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(ListingError::Malformed("not an HTTP/1 status line"));
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or(ListingError::Malformed("no status code"))?;
    if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:")) {
        return Err(ListingError::Malformed("a transfer encoding to an HTTP/1.0 request"));
    }
    Ok((status, &reply[end + 4..]))
}

fn unavailable(reason: String) -> SyncTransportError {
    SyncTransportError::Unavailable { reason }
}

fn status_error(status: u16) -> SyncTransportError {
    let reason = format!("HTTP {status}");
    if status >= 500 || status == 429 || status == 408 {
        SyncTransportError::Unavailable { reason }
    } else {
        SyncTransportError::Refused { reason }
    }
}

impl SyncTransport for WebDavTransport {
    fn put(&self, name: String, blob: Vec<u8>) -> Result<(), SyncTransportError> {
        let reply = self.run(b"PUT", &self.url(&name)?, blob)?;
        match reply.status().as_u16() {
            200..=299 => Ok(()),
            s => Err(status_error(s)),
        }
    }

    fn list(&self) -> Result<Vec<SyncBlob>, SyncTransportError> {
        let reply = self.propfind()?;
        let (status, body) = parse_reply(&reply).map_err(|e| unavailable(e.to_string()))?;
        if status != 207 {
            return Err(status_error(status));
        }
        let text = std::str::from_utf8(body).map_err(|_| unavailable("a listing that is not UTF-8".into()))?;
        parse_multistatus(text).map_err(|e| unavailable(e.to_string()))
    }

    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SyncTransportError> {
        let mut reply = self.run(b"GET", &self.url(&name)?, Vec::new())?;
        match reply.status().as_u16() {
            200 => reply
                .body_mut()
                .with_config()
                .limit(MAX_BLOB)
                .read_to_vec()
                .map(Some)
                .map_err(|e| unavailable(e.to_string())),
            404 => Ok(None),
            s => Err(status_error(s)),
        }
    }

    fn delete(&self, name: String) -> Result<(), SyncTransportError> {
        let reply = self.run(b"DELETE", &self.url(&name)?, Vec::new())?;
        match reply.status().as_u16() {
            200..=299 | 404 => Ok(()),
            s => Err(status_error(s)),
        }
    }
}

/// Why a PROPFIND answer was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("not a WebDAV multistatus: {0}")]
    Malformed(&'static str),
}

/// The blobs a multistatus answer to a PROPFIND of depth 1 lists: each
/// response's last path segment (percent- and entity-decoded) and its
/// `getcontentlength`; collections (the one listed included) and entries
/// without a length are left out. Element names are matched without their
/// namespace prefix. Reads anything without panicking, in one pass.
pub fn parse_multistatus(xml: &str) -> Result<Vec<SyncBlob>, ListingError> {
    #[derive(Default)]
    struct Entry {
        href: Option<String>,
        size: Option<u64>,
        collection: bool,
    }
    let mut out = Vec::new();
    let mut entry: Option<Entry> = None;
    let mut saw_multistatus = false;
    let mut rest = xml;
    // The element whose text is being read.
    let mut reading: Option<&str> = None;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        let after = &rest[open + 1..];
        let close = after.find('>').ok_or(ListingError::Malformed("an unclosed tag"))?;
        let tag = &after[..close];
        rest = &after[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let end = tag.starts_with('/');
        let self_closing = tag.ends_with('/');
        let name = tag.trim_start_matches('/').trim_end_matches('/');
        let name = name.split(|c: char| c.is_ascii_whitespace()).next().unwrap_or("");
        let local = name.rsplit(':').next().unwrap_or(name);
        if let Some(element) = reading
            && end
            && local == element
            && let Some(e) = entry.as_mut()
        {
            let value = decode_entities(text.trim());
            match element {
                "href" => e.href = Some(value),
                _ => e.size = value.parse().ok(),
            }
            reading = None;
            continue;
        }
        match (local, end) {
            ("multistatus", false) => saw_multistatus = true,
            ("response", false) if !self_closing => entry = Some(Entry::default()),
            ("response", true) => {
                if let Some(Entry { href: Some(href), size: Some(size), collection: false }) = entry.take()
                    && let Some(name) = last_segment(&href)
                {
                    out.push(SyncBlob { name, size });
                }
            }
            ("collection", false) => {
                if let Some(e) = entry.as_mut() {
                    e.collection = true;
                }
            }
            ("href" | "getcontentlength", false) if !self_closing && entry.is_some() => {
                reading = Some(if local == "href" { "href" } else { "getcontentlength" });
            }
            _ => {}
        }
    }
    if !saw_multistatus {
        return Err(ListingError::Malformed("no multistatus element"));
    }
    Ok(out)
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// The last segment of an href's path, percent-decoded; None when there is
/// none or it does not decode to UTF-8.
fn last_segment(href: &str) -> Option<String> {
    let path = href.trim_end_matches('/');
    let segment = path.rsplit('/').next().filter(|s| !s.is_empty())?;
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
