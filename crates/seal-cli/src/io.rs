//! Reading inputs and writing outputs: named sources for error messages, atomic output files.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, err, io_text};

/// Bytes read from a file or stdin, with the name used in messages.
pub struct Input {
    /// `stdin` or the path.
    pub name: String,
    /// The contents.
    pub bytes: Vec<u8>,
}

impl Input {
    /// The contents as UTF-8 text.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.bytes).map_err(|_| err(format!("{}: not UTF-8 text", self.name)))
    }
}

/// Reads `path`, or stdin when `None` (telling a terminal user what is expected, as kubeseal).
pub fn read_input(path: Option<&Path>, flag: &str, tty_note: &str) -> Result<Input> {
    match path {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| {
                err(format!(
                    "cannot read {} given with {flag}: {}",
                    p.display(),
                    io_text(&e)
                ))
                .hint("check the path and permissions")
            })?;
            Ok(Input {
                name: p.display().to_string(),
                bytes,
            })
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("({tty_note})");
            }
            let mut bytes = Vec::new();
            stdin
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| err(format!("cannot read stdin: {}", io_text(&e))))?;
            Ok(Input {
                name: "stdin".to_owned(),
                bytes,
            })
        }
    }
}

/// Where output goes: stdout, or a file replaced atomically once everything succeeded.
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file, written via a temporary file in the same directory and renamed into place.
    File {
        /// Final path.
        path: PathBuf,
        /// Unix permission bits for a new file (0600 for plaintext).
        mode: u32,
    },
}

impl Output {
    /// Writes `bytes` to the destination.
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                match out.write_all(bytes).and_then(|()| out.flush()) {
                    // The reader went away (`keyseal … | head`): not an error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => other.map_err(Into::into),
                }
            }
            Output::File { path, mode } => write_atomically(path, bytes, *mode),
        }
    }
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over `path`, so a
/// reader never sees a half-written file and a failure leaves the old file untouched.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| err(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.keyseal-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = open_new(&tmp, mode)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("cannot write {}: {}", path.display(), io_text(&e)))
            .hint("check that the directory exists and is writable")
    })
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}
