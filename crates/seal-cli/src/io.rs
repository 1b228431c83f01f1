//! Reading inputs and writing outputs: named sources for error messages, the destination and
//! format `-w`/`-o` select, rendering as JSON or YAML, atomic output files.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::SealedSecret;
use serde::Serialize;

use crate::cli::{Format, SealArgs};
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

    /// The Secrets in the input.
    pub fn secrets(&self) -> Result<Vec<Secret>> {
        keyseal_api::input::secrets(self.text()?).map_err(|e| err(format!("{}: {e}", self.name)))
    }

    /// The SealedSecrets in the input.
    pub fn sealed_secrets(&self) -> Result<Vec<SealedSecret>> {
        keyseal_api::input::sealed_secrets(self.text()?)
            .map_err(|e| err(format!("{}: {e}", self.name)))
    }
}

/// The most keyseal reads from one input. A Secret holds at most 1 MiB of data (2.8 MiB as the
/// YAML of a SealedSecret), so this leaves room for many objects in one file while bounding the
/// memory a wrong file (a disk image, a log) can take.
pub const MAX_INPUT_BYTES: u64 = 16 << 20;

/// Reads `path`, or stdin when `None` (telling a terminal user what is expected, as kubeseal).
/// Refuses more than [`MAX_INPUT_BYTES`] without reading further.
pub fn read_input(path: Option<&Path>, flag: &str, tty_note: &str) -> Result<Input> {
    let (name, bytes) = match path {
        Some(p) => {
            let name = p.display().to_string();
            let bytes = std::fs::File::open(p).and_then(read_bounded).map_err(|e| {
                err(format!(
                    "cannot read {name} given with {flag}: {}",
                    io_text(&e)
                ))
                .hint("check the path and permissions")
            })?;
            (name, bytes)
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("({tty_note})");
            }
            let bytes = read_bounded(stdin.lock())
                .map_err(|e| err(format!("cannot read stdin: {}", io_text(&e))))?;
            ("stdin".to_owned(), bytes)
        }
    };
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(err(format!(
            "{name}: more than {} MiB; keyseal reads Secrets and SealedSecrets, which Kubernetes \
             limits to about 1 MiB each",
            MAX_INPUT_BYTES >> 20
        ))
        .hint("check that this is the file you meant, or split it"));
    }
    Ok(Input { name, bytes })
}

/// Up to [`MAX_INPUT_BYTES`] + 1 bytes of `reader` (one more tells that there was more).
fn read_bounded(reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
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

/// Where a mode's result goes, and in which format.
pub struct Destination {
    /// `-w`; or, for `--re-encrypt` given only `-f`, that file, rewritten; stdout when `None`.
    path: Option<PathBuf>,
    /// `-o`, unless the file's extension is `.yaml` or `.yml`.
    format: Format,
}

impl Destination {
    /// `-w`, `--re-encrypt -f` and `-o` as kubeseal reads them.
    pub fn from_flags(flags: &SealArgs) -> Self {
        let path = match (
            &flags.sealed_secret_file,
            flags.re_encrypt,
            &flags.secret_file,
        ) {
            (Some(w), _, _) => Some(w.clone()),
            (None, true, Some(f)) => Some(f.clone()),
            _ => None,
        };
        let format = match &path {
            Some(p) if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) => {
                Format::Yaml
            }
            _ => flags.format,
        };
        Self { path, format }
    }

    /// The output, creating a new file with permission bits `mode`.
    pub fn output(&self, mode: u32) -> Output {
        match &self.path {
            Some(path) => Output::File {
                path: path.clone(),
                mode,
            },
            None => Output::Stdout,
        }
    }

    /// Writes `objects` rendered in the format, creating a new file with permission bits `mode`.
    pub fn write_objects<T: Serialize>(&self, objects: &[T], mode: u32) -> Result<()> {
        self.output(mode).write(&render(objects, self.format)?)
    }
}

/// Serializes objects: pretty JSON each followed by a newline, or YAML each preceded by `---`.
pub fn render<T: Serialize>(objects: &[T], format: Format) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for object in objects {
        match format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, object)
                    .map_err(|e| err(format!("cannot encode JSON: {e}")))?;
                out.push(b'\n');
            }
            Format::Yaml => {
                out.extend_from_slice(b"---\n");
                let yaml = keyseal_api::to_yaml(object)
                    .map_err(|e| err(format!("cannot encode YAML: {e}")))?;
                out.extend_from_slice(yaml.as_bytes());
            }
        }
    }
    Ok(out)
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
