//! The HTTP details `vigil web` decides without a socket: which requests
//! are allowed (GET and HEAD only, the token when one is set), the token
//! check itself, and the request target split into a path and a query.

/// Why a request is refused before any page is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 405: nothing here changes anything, so only GET and HEAD exist.
    Method,
    /// 401: a token is configured and the request did not carry it.
    Unauthorized,
}

/// Checks the method and, when `token` is set, the `Authorization` header
/// (`Bearer TOKEN`, or HTTP basic with TOKEN as the password).
pub fn admit(
    method: &str,
    authorization: Option<&str>,
    token: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(token) = token {
        let given = authorization.and_then(presented_token);
        // Compared whatever the method, so a 405 does not tell a prober
        // that its token is wrong sooner than a 401 would.
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            return Err(Refusal::Unauthorized);
        }
    }
    if method != "GET" && method != "HEAD" {
        return Err(Refusal::Method);
    }
    Ok(())
}

/// Whether a request whose `Host` header is `host` may be answered by a
/// view without a token: only when it names this machine's loopback (or
/// the bound address itself). A page on any other site may point its own
/// name at 127.0.0.1 (DNS rebinding) and would then read the whole fleet
/// as a same-origin page; its requests carry that name as `Host`. A
/// request without `Host` (HTTP/1.0 tools) is not a browser's.
pub fn host_allowed(host: Option<&str>, bind: std::net::SocketAddr) -> bool {
    let Some(host) = host.map(str::trim) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        // [v6]:port or [v6]
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == bind.ip(),
        Err(_) => false,
    }
}

/// The token of an `Authorization` header value.
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.to_string())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(base64_decode(rest)?).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        Some(password.to_string())
    } else {
        None
    }
}

/// Equal bytes, in a time that depends on the lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Standard base64 (padding optional); `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A request target split: the decoded path segments and query pairs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
}

impl Target {
    pub fn parse(url: &str) -> Target {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        Target {
            segments: path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| percent_decode(s, false))
                .collect(),
            query: query
                .split('&')
                .filter(|s| !s.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect(),
        }
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A page number from `name` (1 when absent or not a number).
    pub fn page(&self, name: &str) -> usize {
        self.param(name)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|p| (1..=1_000_000).contains(p))
            .unwrap_or(1)
    }

    pub fn segments(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }
}

/// `%XX` decoding (and `+` as a space in a query); invalid UTF-8 becomes
/// U+FFFD, and a stray `%` stays as it is.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `%`-encodes everything but unreserved characters, for links.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_host_names_are_answered() {
        let bind: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for ok in [
            None,
            Some("127.0.0.1:8080"),
            Some("localhost:8080"),
            Some("LOCALHOST"),
            Some("[::1]:8080"),
            Some("127.0.0.2"),
        ] {
            assert!(host_allowed(ok, bind), "{ok:?}");
        }
        for bad in [
            Some("evil.example:8080"),
            Some("localhost.evil.example"),
            Some("10.0.0.5:8080"),
            Some(""),
        ] {
            assert!(!host_allowed(bad, bind), "{bad:?}");
        }
        let lan: std::net::SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert!(
            host_allowed(Some("10.0.0.5:8080"), lan),
            "the bound address"
        );
    }

    const T: &str = "0123456789abcdef";

    #[test]
    fn token_by_bearer_or_basic_password() {
        assert_eq!(admit("GET", None, None), Ok(()));
        assert_eq!(admit("POST", None, None), Err(Refusal::Method));
        assert_eq!(admit("GET", None, Some(T)), Err(Refusal::Unauthorized));
        assert_eq!(
            admit("GET", Some("Bearer 0123456789abcdef"), Some(T)),
            Ok(())
        );
        assert_eq!(
            admit("GET", Some("Bearer 0123456789abcdeX"), Some(T)),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            admit("GET", Some("Bearer 0123456789abcde"), Some(T)),
            Err(Refusal::Unauthorized)
        );
        // "ops:0123456789abcdef" in base64.
        assert_eq!(
            admit("HEAD", Some("Basic b3BzOjAxMjM0NTY3ODlhYmNkZWY="), Some(T)),
            Ok(())
        );
        assert_eq!(
            admit("GET", Some("Basic !!!"), Some(T)),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            admit("DELETE", Some("Bearer 0123456789abcdef"), Some(T)),
            Err(Refusal::Method)
        );
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }

    #[test]
    fn targets_are_decoded() {
        let t = Target::parse("/hosts/a%2Fb/?q=web+1%21&page=3&x");
        assert_eq!(t.segments(), ["hosts", "a/b"]);
        assert_eq!(t.param("q"), Some("web 1!"));
        assert_eq!(t.page("page"), 3);
        assert_eq!(t.page("nope"), 1);
        assert_eq!(t.param("x"), Some(""));
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%ff", false), "\u{fffd}");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
