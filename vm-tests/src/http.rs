//! `vm-tests --serve-http DIR`: answers one HTTP/1.1 connection on stdin/stdout with files from
//! DIR (GET and HEAD; `Connection: close`). QEMU's user-mode network runs it for each connection
//! a guest opens to its `guestfwd` address: that is how the cloud-init guest reaches the test apt
//! repository, with nothing listening on the host and nothing leaving it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path};

/// Serves one request read from `input`, answering on `output`.
pub fn serve(dir: &Path, input: impl Read, mut output: impl Write) -> std::io::Result<()> {
    let mut reader = BufReader::new(input);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Headers are read and ignored, up to the blank line.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    let mut words = request.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches('/');
    // Only plain names below DIR: no "..", no absolute paths.
    let safe = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let file = dir.join(path);
    let body = if safe && !path.is_empty() && (method == "GET" || method == "HEAD") {
        std::fs::read(&file).ok()
    } else {
        None
    };
    match body {
        Some(body) => {
            write!(
                output,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method == "GET" {
                output.write_all(&body)?;
            }
        }
        None => write!(
            output,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(dir: &Path, req: &str) -> String {
        let mut out = Vec::new();
        serve(dir, req.as_bytes(), &mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn serves_files_and_nothing_outside_the_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Release"), "hello").unwrap();
        let ok = ask(d.path(), "GET /Release HTTP/1.1\r\nHost: x\r\n\r\n");
        // apt asks for a flat repository's files as /./NAME.
        assert!(ask(d.path(), "GET /./Release HTTP/1.1\r\n\r\n").ends_with("hello"));
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nhello"),
            "{ok}"
        );
        let head = ask(d.path(), "HEAD /Release HTTP/1.1\r\n\r\n");
        assert!(head.contains("Content-Length: 5") && !head.ends_with("hello"));
        for bad in [
            "GET /../etc/passwd HTTP/1.1",
            "GET / HTTP/1.1",
            "GET /nope HTTP/1.1",
            "POST /Release HTTP/1.1",
        ] {
            assert!(
                ask(d.path(), &format!("{bad}\r\n\r\n")).starts_with("HTTP/1.1 404"),
                "{bad}"
            );
        }
    }
}
