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
        CliError::new(e.to_string())
    }
}

/// Shorthand for building an error in place.
pub fn err(message: impl Into<String>) -> CliError {
    CliError::new(message)
}

/// Result type of the CLI.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
