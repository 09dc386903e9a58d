//! Just enough of PostgreSQL's frontend protocol for the monitor's one
//! query a second over the local socket: a psql per sample would cost a
//! process start and a new backend each time, a client library a second
//! dependency tree. Startup with trust (or peer) authentication, the
//! simple query protocol, text results.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("the server: {0}")]
    Server(String),
    #[error("authentication method {0} is not supported: pg_hba must trust the socket")]
    Authentication(u32),
    #[error("unexpected message {0:?} from the server")]
    Protocol(char),
}

impl WireError {
    /// The server is starting, stopping or in recovery without hot
    /// standby (SQLSTATE class 57P): it will let us in by itself.
    pub fn not_yet(&self) -> bool {
        match self {
            WireError::Io { .. } => true,
            WireError::Server(message) => message.ends_with("(57P03)"),
            _ => false,
        }
    }
}

/// One session; dropped, it is ended.
pub struct Connection {
    path: String,
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

/// Larger messages are refused rather than allocated.
const MAX_MESSAGE: usize = 64 << 20;

impl Connection {
    /// Connects to `socket` as `user`, every read and write bounded by
    /// `timeout`; `options` are the startup's `-c name=value` settings.
    pub fn open(
        socket: &Path,
        user: &str,
        database: &str,
        options: &str,
        timeout: Duration,
    ) -> Result<Connection, WireError> {
        let path = socket.display().to_string();
        let io = |source| WireError::Io {
            path: path.clone(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut connection = Connection {
            reader: BufReader::new(stream.try_clone().map_err(io)?),
            writer: BufWriter::new(stream),
            path,
        };
        connection.startup(user, database, options)?;
        Ok(connection)
    }

    fn startup(&mut self, user: &str, database: &str, options: &str) -> Result<(), WireError> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (key, value) in [
            ("user", user),
            ("database", database),
            ("application_name", "spilo monitor"),
            ("options", options),
        ] {
            for part in [key, value] {
                body.extend_from_slice(part.as_bytes());
                body.push(0);
            }
        }
        body.push(0);
        self.send(None, &body)?;
        loop {
            let (kind, body) = self.receive()?;
            match kind {
                b'R' => match be_u32(&body, 0) {
                    0 => {}
                    method => return Err(WireError::Authentication(method)),
                },
                b'Z' => return Ok(()),
                b'E' => return Err(WireError::Server(error_message(&body))),
                b'S' | b'K' | b'N' => {}
                other => return Err(WireError::Protocol(other as char)),
            }
        }
    }

    /// The rows `sql` returns, each column as text (None for NULL).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WireError> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(Some(b'Q'), &body)?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let (kind, body) = self.receive()?;
            match kind {
                b'D' => rows.push(data_row(&body)?),
                b'E' => failure = Some(error_message(&body)),
                b'Z' => break,
                b'T' | b'C' | b'I' | b'N' | b'S' => {}
                other => return Err(WireError::Protocol(other as char)),
            }
        }
        match failure {
            Some(message) => Err(WireError::Server(message)),
            None => Ok(rows),
        }
    }

    fn send(&mut self, kind: Option<u8>, body: &[u8]) -> Result<(), WireError> {
        let length = u32::try_from(body.len() + 4).map_err(|_| WireError::Protocol('Q'))?;
        let mut out = Vec::with_capacity(body.len() + 5);
        out.extend(kind);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(body);
        self.writer
            .write_all(&out)
            .and_then(|()| self.writer.flush())
            .map_err(|source| self.io(source))
    }

    fn receive(&mut self) -> Result<(u8, Vec<u8>), WireError> {
        let mut head = [0u8; 5];
        self.reader
            .read_exact(&mut head)
            .map_err(|source| self.io(source))?;
        let length = be_u32(&head, 1) as usize;
        if !(4..=MAX_MESSAGE).contains(&length) {
            return Err(WireError::Protocol(head[0] as char));
        }
        let mut body = vec![0; length - 4];
        self.reader
            .read_exact(&mut body)
            .map_err(|source| self.io(source))?;
        Ok((head[0], body))
    }

    fn io(&self, source: io::Error) -> WireError {
        WireError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.send(Some(b'X'), &[]);
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, WireError> {
    let bad = || WireError::Protocol('D');
    let count = body
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(bad)?;
    let mut at = 2;
    let mut columns = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let length = i32::from_be_bytes(
            body.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?,
        );
        at += 4;
        if length < 0 {
            columns.push(None);
            continue;
        }
        let end = at + length as usize;
        let value = body.get(at..end).ok_or_else(bad)?;
        columns.push(Some(String::from_utf8_lossy(value).into_owned()));
        at = end;
    }
    Ok(columns)
}

/// The `M` (message) field of an ErrorResponse, with its SQLSTATE.
fn error_message(body: &[u8]) -> String {
    let mut message = String::new();
    let mut code = String::new();
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let text = String::from_utf8_lossy(&field[1..]);
        match field[0] {
            b'M' => message = text.into_owned(),
            b'C' => code = text.into_owned(),
            _ => {}
        }
    }
    format!("{message} ({code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows_with_nulls() {
        let mut body = 2u16.to_be_bytes().to_vec();
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"ok");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(data_row(&body).unwrap(), vec![Some("ok".into()), None]);
        assert!(data_row(&body[..5]).is_err());
    }

    #[test]
    fn error_fields() {
        let body = b"SERROR\0C42501\0Mpermission denied\0\0";
        assert_eq!(error_message(body), "permission denied (42501)");
        assert!(!WireError::Server(error_message(body)).not_yet());
        let starting = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
        assert!(WireError::Server(error_message(starting)).not_yet());
    }
}
