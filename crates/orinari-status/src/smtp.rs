//! Sending mail through an SMTP relay (RFC 5321): greeting, EHLO, MAIL FROM,
//! RCPT TO, DATA with dot-stuffing, QUIT. Plain SMTP to a relay the operator
//! runs (a local MTA, or a smarthost on a private network); this version does
//! no STARTTLS or AUTH. Addresses are checked so that no header or command can
//! be injected; a non-ASCII subject is encoded (RFC 2047).

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One message.
#[derive(Debug, Clone)]
pub struct Mail<'a> {
    /// Envelope and header sender.
    pub from: &'a str,
    /// The one recipient.
    pub to: &'a str,
    /// Subject (any Unicode).
    pub subject: &'a str,
    /// Plain-text body.
    pub body: &'a str,
}

/// Whether `addr` is a plain `local@domain` address with nothing that could
/// break out of an SMTP command or a header.
pub fn valid_address(addr: &str) -> bool {
    let ok_chars = addr
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | ',' | ';' | '\\'));
    let parts: Vec<&str> = addr.split('@').collect();
    ok_chars
        && addr.len() <= 254
        && parts.len() == 2
        && !parts[0].is_empty()
        && parts[1].contains('.')
        && !parts[1].starts_with('.')
        && !parts[1].ends_with('.')
}

fn subject_header(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    if clean.is_ascii() {
        clean
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(clean.as_bytes())
        )
    }
}

async fn expect(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    codes: &[u16],
) -> Result<(), String> {
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading the reply: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("unexpected reply `{}`", line.trim_end()))?;
        // `250-…` continues a multi-line reply; `250 …` ends it.
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return if codes.contains(&code) {
            Ok(())
        } else {
            Err(format!("the server answered `{}`", line.trim_end()))
        };
    }
}

/// Send one message through the relay at `addr` (`host:port`).
pub async fn send(addr: &str, mail: &Mail<'_>, timeout: Duration) -> Result<(), String> {
    if !valid_address(mail.from) {
        return Err(format!("`{}` is not a valid sender address", mail.from));
    }
    if !valid_address(mail.to) {
        return Err(format!("`{}` is not a valid recipient address", mail.to));
    }
    tokio::time::timeout(timeout, exchange(addr, mail))
        .await
        .map_err(|_| format!("the SMTP exchange took longer than {timeout:?}"))?
}

async fn exchange(addr: &str, m: &Mail<'_>) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (read, mut w) = stream.into_split();
    let mut r = BufReader::new(read);
    expect(&mut r, &[220]).await?;
    let mut cmd = async |line: String, codes: &[u16]| -> Result<(), String> {
        w.write_all(line.as_bytes())
            .await
            .map_err(|e| format!("writing: {e}"))?;
        expect(&mut r, codes).await
    };
    cmd("EHLO orinari\r\n".into(), &[250]).await?;
    cmd(format!("MAIL FROM:<{}>\r\n", m.from), &[250]).await?;
    cmd(format!("RCPT TO:<{}>\r\n", m.to), &[250, 251]).await?;
    cmd("DATA\r\n".into(), &[354]).await?;
    let date = jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S +0000");
    let mut data = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <{id}@orinari>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        from = m.from,
        to = m.to,
        subject = subject_header(m.subject),
        id = crate::new_id(),
    );
    for line in m.body.lines() {
        // Dot-stuffing: a line starting with "." gets another.
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line.trim_end_matches('\r'));
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    cmd(data, &[250]).await?;
    cmd("QUIT\r\n".into(), &[221]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_cannot_inject() {
        assert!(valid_address("ops@example.org"));
        assert!(!valid_address("ops@example.org>\r\nRCPT TO:<x@y.z"));
        assert!(!valid_address("a b@example.org"));
        assert!(!valid_address("nobody"));
        assert!(!valid_address("x@localhost"));
        assert!(!valid_address("x@y@z.org"));
    }

    #[test]
    fn subjects_are_encoded_and_single_line() {
        assert_eq!(subject_header("API down\r\nBcc: x"), "API downBcc: x");
        assert_eq!(subject_header("Störung"), "=?utf-8?b?U3TDtnJ1bmc=?=");
    }
}
