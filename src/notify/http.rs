//! A minimal HTTP/1.1 client: one JSON POST to an `http://` URL (over the
//! bounded TCP helpers of `net.rs`).
//!
//! The webhook handler needs exactly one request shape, and the project adds
//! no crates, so this is written over `std::net::TcpStream`: one connection
//! per request (`Connection: close`), a `Content-Length` body, every connect,
//! write and read bounded by the caller's deadline, and a 2xx status is
//! success. TLS is not spoken: an `https://` URL is refused when the
//! configuration is read (put a local relay such as stunnel or nginx in
//! front of a TLS-only receiver).

use super::net::{connect, io_reason, remaining, write_all};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The most of a response kept (status line, headers and the start of the
/// body, for the error message); the rest is not read.
const MAX_RESPONSE: usize = 16 * 1024;

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host as written (a name, an IPv4 address or a bracketed IPv6 one).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses the URL; the error is a sentence fragment for a `ConfigError`.
    pub fn parse(raw: &str) -> Result<HttpUrl, String> {
        if raw.len() >= 8 && raw[..8].eq_ignore_ascii_case("https://") {
            return Err("https is not supported: point this at an http relay (e.g. stunnel or nginx on localhost) that forwards over TLS".into());
        }
        let rest = match raw.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &raw[7..],
            _ => return Err("expected an http:// URL".into()),
        };
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the URL contains white space or control characters".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or("the port must be from 1 to 65535")?;
                (h, port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header value (the port only when not 80).
    fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// POSTs `body` as JSON and returns the status code when it is 2xx. Takes at
/// most about `timeout` in all.
pub fn post_json(url: &HttpUrl, body: &[u8], timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(&url.host, url.port, deadline)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vigil/{}\r\nContent-Type: application/json\r\nAccept: */*\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    write_all(&mut stream, &request, deadline).map_err(|e| format!("{url}: sending: {e}"))?;
    let response = read_head(&mut stream, deadline)
        .map_err(|e| format!("{url}: reading the response: {e}"))?;
    let status = parse_status(&response)
        .ok_or_else(|| format!("{url}: not an HTTP response: {:?}", first_line(&response)))?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("{url}: HTTP status {}", first_line(&response)))
    }
}

/// Reads the status line and headers (up to [`MAX_RESPONSE`] bytes).
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = remaining(deadline).ok_or("timed out")?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = stream.read(&mut chunk).map_err(|e| io_reason(&e))?;
        if n == 0 {
            return if buf.is_empty() {
                Err("the server closed the connection without answering".into())
            } else {
                Ok(buf)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_RESPONSE {
            return Ok(buf);
        }
    }
}

/// The status code of `HTTP/1.x NNN reason`.
fn parse_status(response: &[u8]) -> Option<u16> {
    let line = first_line(response);
    let mut words = line.split(' ');
    let version = words.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn first_line(response: &[u8]) -> String {
    let end = response
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(response.len().min(200));
    String::from_utf8_lossy(&response[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::net::TcpListener;

    #[test]
    fn parses_urls() {
        let u = HttpUrl::parse("http://relay.example:8080/v2/enqueue?x=1#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("relay.example", 8080, "/v2/enqueue?x=1")
        );
        let u = HttpUrl::parse("HTTP://127.0.0.1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = HttpUrl::parse("http://[::1]:9/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 9));
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://x:0/",
            "http://u:p@x/",
            "http://x/a b",
            "x",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 202 Accepted\r\n\r\n"), Some(202));
        assert_eq!(parse_status(b"HTTP/1.0 500 Oops\r\n"), Some(500));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    /// A one-request server answering `status`; returns what it received.
    fn serve_once(status: &'static str) -> (u16, std::thread::JoinHandle<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = std::io::BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = reader.into_inner();
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            (head, body)
        });
        (port, handle)
    }

    #[test]
    fn posts_json_and_reads_the_status() {
        let (port, server) = serve_once("202 Accepted");
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/hook?a=b")).unwrap();
        assert_eq!(
            post_json(&url, b"{\"k\":1}", Duration::from_secs(10)),
            Ok(202)
        );
        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("POST /hook?a=b HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(
            head.contains("Content-Type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert_eq!(body, b"{\"k\":1}");
    }

    #[test]
    fn non_2xx_is_an_error_with_the_status() {
        let (port, server) = serve_once("503 Service Unavailable");
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let err = post_json(&url, b"{}", Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("503"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let err = post_json(&url, b"{}", Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        drop(listener);
    }
}
