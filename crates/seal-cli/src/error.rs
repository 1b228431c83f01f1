//! CLI errors: a message that names the file, field or flag, and an optional hint saying what to
//! do. Printed as `error: …` then `hint: …` on stderr, exit status 1.

use std::fmt;

/// An error with an optional hint.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong, naming the object.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl CliError {
    /// An error without a hint.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(io_text(&e))
    }
}

/// An operating-system error in Go's words, as kubeseal prints it: the C library's message in
/// lower case and without Rust's ` (os error N)` suffix (`no such file or directory`,
/// `permission denied`, `is a directory`), so scripts that match kubeseal's errors match ours.
/// Other I/O errors keep their own text.
pub fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let Some(code) = e.raw_os_error() else {
        return text;
    };
    let message = text
        .strip_suffix(&format!(" (os error {code})"))
        .unwrap_or(&text);
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Shorthand for building an error in place.
pub fn err(message: impl Into<String>) -> CliError {
    CliError::new(message)
}

/// `namespace/name`, or `name` without a namespace, as messages name an object.
pub fn object_name(ns: Option<&str>, name: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("{ns}/{}", name.unwrap_or("")),
        None => name.unwrap_or("").to_owned(),
    }
}

/// Result type of the CLI.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::io_text;
    use std::io::{Error, ErrorKind};

    #[test]
    fn os_errors_read_as_go_prints_them() {
        // errno values: ENOENT, EACCES, EISDIR, ENOTDIR.
        for (errno, go) in [
            (2, "no such file or directory"),
            (13, "permission denied"),
            (21, "is a directory"),
            (20, "not a directory"),
        ] {
            assert_eq!(io_text(&Error::from_raw_os_error(errno)), go);
        }
        assert_eq!(
            io_text(&Error::new(
                ErrorKind::InvalidData,
                "stream did not contain valid UTF-8"
            )),
            "stream did not contain valid UTF-8"
        );
    }
}
