//! The demo's vote app: an HTTP page with two buttons whose counts live in redis.
//!
//!   GET  /          the page: both options with their counts, and the serving pod's name
//!   POST /vote      form field `vote=a|b`: INCR in redis, then 303 back to /
//!   GET  /healthz   200 when redis answers PING (the readiness probe), 503 otherwise
//!
//! Standard library only (a demo image built in seconds with `rustc`, no crates): one thread per
//! connection, requests read up to a fixed size, every socket operation under a timeout.
//! Environment: LISTEN (default 0.0.0.0:8080), REDIS (default redis:6379), REDIS_PASSWORD
//! (sent with AUTH when set), OPTION_A/OPTION_B (the buttons' labels, default Cats/Dogs).

use std::env;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Bounds every read and write on a client or redis socket.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head and body read from a client.
const MAX_REQUEST: usize = 16 * 1024;
/// Redis keys of the two options' counters.
const KEYS: [(&str, &str); 2] = [("a", "instavote:a"), ("b", "instavote:b")];

fn setting(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A RESP array of bulk strings.
fn encode(command: &[&str]) -> String {
    let mut request = format!("*{}\r\n", command.len());
    for part in command {
        request.push_str(&format!("${}\r\n{}\r\n", part.len(), part));
    }
    request
}

/// One reply: the line (`+OK`, `:3`) or a bulk string's value.
fn reply(reader: &mut impl BufRead, addr: &str) -> Result<String, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("redis {addr}: {e}"))?;
    let line = line.trim_end().to_owned();
    match line.chars().next() {
        Some('-') | None => Err(format!("redis {addr}: {line}")),
        Some('$') if line != "$-1" => {
            let mut value = String::new();
            reader
                .read_line(&mut value)
                .map_err(|e| format!("redis {addr}: {e}"))?;
            Ok(value.trim_end().to_owned())
        }
        Some('$') => Ok(String::new()),
        Some(':') | Some('+') => Ok(line[1..].to_owned()),
        _ => Err(format!("redis {addr}: unexpected reply {line}")),
    }
}

/// One RESP command on a fresh connection, after `AUTH` when REDIS_PASSWORD is set; returns
/// the command's reply.
fn redis(command: &[&str]) -> Result<String, String> {
    let addr = setting("REDIS", "redis:6379");
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {addr}: no address"))?;
    let stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
    let password = env::var("REDIS_PASSWORD").ok().filter(|p| !p.is_empty());
    let mut request = String::new();
    if let Some(password) = &password {
        request.push_str(&encode(&["AUTH", password]));
    }
    request.push_str(&encode(command));
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| format!("redis {addr}: {e}"))?;
    let mut reader = BufReader::new(&stream).take(4096);
    if password.is_some() {
        // The password itself never appears in a message.
        reply(&mut reader, &addr).map_err(|_| format!("redis {addr}: AUTH refused"))?;
    }
    reply(&mut reader, &addr)
}

fn count(key: &str) -> Result<u64, String> {
    let value = redis(&["GET", key])?;
    if value.is_empty() {
        return Ok(0);
    }
    value
        .parse()
        .map_err(|_| format!("redis: {key} holds {value:?}, not a count"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page() -> (u16, String) {
    let host = escape(&env::var("HOSTNAME").unwrap_or_default());
    let labels = [setting("OPTION_A", "Cats"), setting("OPTION_B", "Dogs")];
    let mut buttons = String::new();
    let mut status = 200;
    for ((option, key), label) in KEYS.iter().zip(labels.iter()) {
        let shown = match count(key) {
            Ok(n) => n.to_string(),
            Err(e) => {
                status = 503;
                format!("? ({})", escape(&e))
            }
        };
        buttons.push_str(&format!(
            "    <button name=\"vote\" value=\"{option}\">{}</button> <span id=\"count-{option}\">{shown}</span>\n",
            escape(label)
        ));
    }
    let body = format!(
        "<!DOCTYPE html>\n<html>\n<head><title>instavote</title></head>\n<body>\n  <h1>{} vs {}!</h1>\n  <form method=\"POST\" action=\"/vote\">\n{buttons}  </form>\n  <p>Processed by pod {host}</p>\n</body>\n</html>\n",
        escape(&labels[0]),
        escape(&labels[1])
    );
    (status, body)
}

fn respond(stream: &mut TcpStream, status: u16, extra: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn handle(mut stream: TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half).take(MAX_REQUEST as u64);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header.trim_end().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    content_length = value.trim().parse().unwrap_or(usize::MAX);
                }
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/") => {
            let (status, body) = page();
            respond(&mut stream, status, "", &body);
        }
        ("GET", "/healthz") => match redis(&["PING"]) {
            Ok(_) => respond(&mut stream, 200, "", "ok\n"),
            Err(e) => respond(&mut stream, 503, "", &format!("{}\n", escape(&e))),
        },
        ("POST", "/vote") => {
            if content_length > MAX_REQUEST {
                return respond(&mut stream, 413, "", "request too large\n");
            }
            let mut body = vec![0; content_length];
            if reader.read_exact(&mut body).is_err() {
                return respond(&mut stream, 400, "", "short body\n");
            }
            let body = String::from_utf8_lossy(&body);
            let chosen = body
                .split('&')
                .find_map(|field| field.strip_prefix("vote="));
            match KEYS.iter().find(|(option, _)| Some(*option) == chosen) {
                Some((_, key)) => match redis(&["INCR", key]) {
                    Ok(_) => respond(&mut stream, 303, "Location: /\r\n", ""),
                    Err(e) => respond(&mut stream, 503, "", &format!("{}\n", escape(&e))),
                },
                None => respond(&mut stream, 400, "", "vote must be a or b\n"),
            }
        }
        _ => respond(&mut stream, 404, "", "not found\n"),
    }
}

fn main() {
    let listen = setting("LISTEN", "0.0.0.0:8080");
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vote: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "vote: listening on {listen}, redis at {}",
        setting("REDIS", "redis:6379")
    );
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || handle(stream));
    }
}
