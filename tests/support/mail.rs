//! Reading the gateway's mail in tests: a message as a mail client shows it.

/// A message as read (quoted-printable undone, also harmless on 7-bit text without `=`).
pub(crate) fn quoted_printable(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) if b[i] == b'=' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A real SMTP server for the tests: aiosmtpd (Debian's `python3-aiosmtpd`) saving every
/// message to a maildir; stopped when dropped.
pub(crate) struct Smtp {
    child: std::process::Child,
    pub port: u16,
    pub maildir: std::path::PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python that has aiosmtpd (pyenv's may not; Debian's package is in /usr/bin).
pub(crate) fn python_with_aiosmtpd() -> Option<&'static str> {
    use std::process::{Command, Stdio};
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Starts aiosmtpd on a free loopback port, saving to `maildir`, once it listens; `None`
/// (printed, or a failure under `SALLYPORT_REQUIRE_EXTERNAL=1`) without aiosmtpd.
pub(crate) fn start_smtp(maildir: &std::path::Path) -> Option<Smtp> {
    let Some(python) = python_with_aiosmtpd() else {
        sallyport::db::testing::skip_or_fail(
            "aiosmtpd is not installed (apt-get install python3-aiosmtpd)",
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let smtp = Smtp {
        child,
        port,
        maildir: maildir.to_path_buf(),
    };
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(smtp);
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("aiosmtpd did not listen on port {port}");
}

impl Smtp {
    /// The first delivered message holding `needle`, as read (waits up to 10 s), and the
    /// whitespace-delimited word of it that starts with `needle` (a link).
    pub(crate) fn wait_for(&self, needle: &str) -> (String, String) {
        for _ in 0..400 {
            let new = self.maildir.join("new");
            let mut files: Vec<_> = std::fs::read_dir(&new)
                .into_iter()
                .flatten()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files {
                let text = quoted_printable(&std::fs::read_to_string(&f).unwrap());
                if let Some(at) = text.find(needle) {
                    let word = text[at..].split_whitespace().next().unwrap().to_string();
                    return (word, text);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!(
            "no message with {needle} reached {}",
            self.maildir.display()
        );
    }
}
