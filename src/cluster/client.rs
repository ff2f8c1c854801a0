//! The HTTP client of forwarded requests: one HTTP/1.1 exchange on a fresh connection,
//! bounded in time as a whole (connecting included) and in the size of the answer.
//!
//! hyper's own connection-level client (`hyper::client::conn::http1`), already in the
//! tree under axum: a forwarded request is rare (an investigator's terminate or listen),
//! so a connection pool buys nothing, and plain HTTP is what the nodes' private network
//! carries (the credential, [`super::token`], makes it authentic; a cluster whose nodes
//! talk across an untrusted network puts them behind a tunnel or a mesh).

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// The largest answer a node reads from another (an SDP answer is a few KiB; a CDR less).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A node's API address: `http://host:port` (port 80 when not given), nothing after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl {
    /// `host:port`, what a connection is opened to and the `Host` header says.
    authority: String,
}

impl NodeUrl {
    /// Parses `node.api_url`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<NodeUrl, String> {
        let uri: Uri = text
            .parse()
            .map_err(|_| "must be an http:// URL such as http://10.0.0.5:8080".to_string())?;
        if uri.scheme_str() != Some("http") {
            return Err("must start with http:// (the nodes' private network)".into());
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("must name a host")?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err("must be http://host:port, with no path or query".into());
        }
        let port = uri.port_u16().unwrap_or(80);
        if port == 0 {
            return Err("must name a port other than 0".into());
        }
        Ok(NodeUrl {
            authority: format!("{host}:{port}"),
        })
    }

    /// The URL of the API bound to `addr` (`http.listen` once bound): a wildcard address
    /// becomes the loopback address of its family.
    pub fn of_listener(addr: std::net::SocketAddr) -> String {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
            ip => ip,
        };
        format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// What went wrong with an exchange, in words for the error message.
pub(crate) type ExchangeError = String;

/// Sends `method path` with a JSON `body` and the extra `headers` to `url`; the status
/// and body of the answer. Gives up after `timeout`, connecting included.
pub(crate) async fn exchange(
    url: &NodeUrl,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), ExchangeError> {
    let work = exchange_now(url, method, path, headers, body);
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} s (cluster.forward_timeout_secs)",
            timeout.as_secs_f32()
        )),
    }
}

async fn exchange_now(
    url: &NodeUrl,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(StatusCode, Bytes), ExchangeError> {
    let stream = tokio::net::TcpStream::connect(url.authority())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    // The connection is driven beside the request and ends with it (one exchange).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, url.authority())
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Body::from(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), MAX_ANSWER_BYTES)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_are_http_host_and_port_only() {
        let ok = |s: &str| NodeUrl::parse(s).map(|u| u.authority().to_string());
        assert_eq!(ok("http://10.0.0.5:8080"), Ok("10.0.0.5:8080".into()));
        assert_eq!(
            ok("http://gw-2.internal:8080/"),
            Ok("gw-2.internal:8080".into())
        );
        assert_eq!(ok("http://gw-2"), Ok("gw-2:80".into()));
        assert_eq!(ok("http://[::1]:8080"), Ok("[::1]:8080".into()));
        for bad in [
            "",
            "10.0.0.5:8080",
            "https://gw:8443",
            "http://gw:8080/api",
            "http://gw:8080/?x=1",
            "http://:8080",
            "http://gw:0",
            "not a url",
        ] {
            assert!(NodeUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let url = |s: &str| NodeUrl::of_listener(s.parse().unwrap());
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("10.1.2.3:8080"), "http://10.1.2.3:8080");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080");
        assert!(NodeUrl::parse(&url("[::]:8080")).is_ok());
    }
}
