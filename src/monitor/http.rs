//! The server on 8080: bg_mon's paths (`/`, `/N`, `/<time>`, `/prev`,
//! `/ui`) plus `/metrics`. Every answer is made from what the sampler
//! published last, so a slow database never delays one. One request per
//! connection, a bounded head, a deadline and a bounded number of
//! connections: a misbehaving client costs a socket, not the monitor.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::history::{self, Served};
use super::{Shared, metrics};
use crate::backup::calendar::{Date, SECONDS_PER_DAY, days_from_civil};

/// A request head larger than this is refused (431).
const MAX_HEAD: usize = 8 << 10;
/// The whole exchange, from accept to the last byte written: an idle or
/// slow client is let go after this.
const DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once (a few kB each); more are closed as they
/// come.
const MAX_CONNECTIONS: usize = 1024;

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DEADLINE, exchange(stream, &shared)).await;
            drop(permit);
        });
    }
}

/// What a request asks, as far as the answer depends on it.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub brotli: bool,
    pub html: bool,
}

pub(crate) struct Response {
    status: &'static str,
    content_type: &'static str,
    brotli: bool,
    body: Vec<u8>,
}

impl Response {
    fn new(status: &'static str, content_type: &'static str, body: Vec<u8>) -> Self {
        Response {
            status,
            content_type,
            brotli: false,
            body,
        }
    }

    fn not_found() -> Self {
        Response::new("404 Not Found", "text/plain", b"not found\n".to_vec())
    }

    fn head(&self) -> String {
        format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Cache-Control: no-store\r\n\
             X-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'self'\r\n\
             Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            if self.brotli {
                "Content-Encoding: br\r\n"
            } else {
                ""
            },
        )
    }
}

async fn exchange(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 2048];
    let response = loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
        if let Some(end) = find(&head, b"\r\n\r\n") {
            break respond(&head[..end], shared);
        }
        if head.len() > MAX_HEAD {
            break Response::new(
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request head too large\n".to_vec(),
            );
        }
    };
    let method_is_head = head.starts_with(b"HEAD ");
    stream.write_all(response.head().as_bytes()).await?;
    if !method_is_head {
        stream.write_all(&response.body).await?;
    }
    stream.shutdown().await
}

/// The answer to a request head (without its blank line).
pub(crate) fn respond(head: &[u8], shared: &Shared) -> Response {
    match parse(head) {
        Some(request) => answer(&request, shared),
        None => Response::new("400 Bad Request", "text/plain", b"bad request\n".to_vec()),
    }
}

impl Response {
    /// Head and body, as sent.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut out = self.head().into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn parse(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if !version.starts_with("HTTP/1.") || first.next().is_some() || !target.starts_with('/') {
        return None;
    }
    let mut request = Request {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or("/").to_owned(),
        brotli: false,
        html: false,
    };
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim().to_ascii_lowercase();
        if name.eq_ignore_ascii_case("accept-encoding") {
            request.brotli = value.split(',').any(|coding| {
                let mut parts = coding.trim().split(';');
                parts.next() == Some("br") && parts.all(|q| q.trim() != "q=0")
            });
        } else if name.eq_ignore_ascii_case("accept") {
            request.html = value.split(',').any(|t| t.trim().starts_with("text/html"));
        }
    }
    Some(request)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn answer(request: &Request, shared: &Shared) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::new(
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n".to_vec(),
        );
    }
    let path = request.path.as_str();
    match path {
        "/" if request.html => page(),
        "/" => snapshot(request, shared),
        "/ui" | "/ui/" => page(),
        "/ui/app.js" => Response::new("200 OK", "text/javascript", SCRIPT.as_bytes().to_vec()),
        "/ui/style.css" => Response::new("200 OK", "text/css", STYLE.as_bytes().to_vec()),
        "/metrics" => match shared.latest() {
            Some(published) => Response::new(
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(&published.raw, now_ms() as f64 / 1000.0).into_bytes(),
            ),
            None => Response::not_found(),
        },
        _ => bucket(request, shared).unwrap_or_else(Response::not_found),
    }
}

fn page() -> Response {
    Response::new(
        "200 OK",
        "text/html; charset=utf-8",
        PAGE.as_bytes().to_vec(),
    )
}

fn snapshot(request: &Request, shared: &Shared) -> Response {
    let Some(published) = shared.latest() else {
        return Response::not_found();
    };
    if request.brotli {
        let mut response = Response::new("200 OK", "application/json", published.brotli().to_vec());
        response.brotli = true;
        response
    } else {
        Response::new("200 OK", "application/json", published.json.clone())
    }
}

/// `/N`, `/<unix time>`, `/<date and time>` (UTC) and `/prev`.
fn bucket(request: &Request, shared: &Shared) -> Option<Response> {
    let key = decode(request.path.strip_prefix('/')?)?;
    let now = now_ms();
    let served = {
        let mut history = shared.history();
        let buckets = history.buckets();
        if key == "prev" {
            history.prev(now)?
        } else if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = key.parse().ok()?;
            if n < buckets as i64 {
                history.by_index(n as usize, now)?
            } else {
                history.by_time(n, now)?
            }
        } else {
            history.by_time(unix_time(&key, now / 1000)?, now)?
        }
    };
    Some(bucket_response(request, &served))
}

fn bucket_response(request: &Request, served: &Served) -> Response {
    if request.brotli {
        let mut response = Response::new("200 OK", "application/json", served.brotli.clone());
        response.brotli = true;
        response
    } else {
        Response::new("200 OK", "application/json", history::decompress(served))
    }
}

/// Percent-decoding, `+` as a space.
fn decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `HH:MM[:SS]` (today, UTC; yesterday when that is over an hour ahead)
/// or `YYYY-MM-DD HH:MM[:SS]` (UTC, `T` also separates).
pub(crate) fn unix_time(text: &str, now: i64) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (Some(date), time),
        None => (None, text),
    };
    let mut clock = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute) = (clock.next()??, clock.next()??);
    let second = clock.next().map_or(Some(0), |s| s)?;
    if clock.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let of_day = hour * 3600 + minute * 60 + second;
    match date {
        None => {
            let today = now.div_euclid(86_400) * 86_400 + of_day;
            Some(if today - now >= 3600 {
                today - 86_400
            } else {
                today
            })
        }
        Some(date) => {
            let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
            let (year, month, day) = (parts.next()??, parts.next()??, parts.next()??);
            if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
                return None;
            }
            let date = Date {
                year,
                month: u32::try_from(month).ok()?,
                day: u32::try_from(day).ok()?,
            };
            Some(days_from_civil(date) * SECONDS_PER_DAY + of_day)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let r = parse(
            b"GET /metrics?x=1 HTTP/1.1\r\nAccept-Encoding: gzip, br\r\nAccept: text/html,*/*",
        )
        .unwrap();
        assert_eq!(
            (r.path.as_str(), r.brotli, r.html),
            ("/metrics", true, true)
        );
        let r = parse(b"GET / HTTP/1.0\r\nAccept-Encoding: br;q=0").unwrap();
        assert!(!r.brotli);
        assert!(parse(b"GET / HTTP/1.1 extra").is_none());
        assert!(parse(b"GET relative HTTP/1.1").is_none());
        assert!(parse(b"GET / SPDY/3").is_none());
        assert!(parse(b"GET / HTTP/1.1\r\nno colon").is_none());
    }

    #[test]
    fn times_in_paths() {
        let date = Date {
            year: 2026,
            month: 12,
            day: 3,
        };
        let now = days_from_civil(date) * SECONDS_PER_DAY + 12 * 3600;
        assert_eq!(unix_time("11:30", now), Some(now - 1800));
        assert_eq!(unix_time("13:30:00", now), Some(now + 5400 - 86_400));
        assert_eq!(unix_time("2026-12-03 11:30", now), Some(now - 1800));
        assert_eq!(unix_time("2026-12-03T11:30:10Z", now), Some(now - 1790));
        for bad in ["now", "25:00", "12", "2026-13-01 10:00", "1:2:3:4"] {
            assert_eq!(unix_time(bad, now), None, "{bad}");
        }
        assert_eq!(
            decode("2026-12-03%2011:30").as_deref(),
            Some("2026-12-03 11:30")
        );
        assert_eq!(decode("%zz"), None);
    }
}
