//! Logs, as upstream writes them: text or JSON lines; with `--log-info-stdout` (the default)
//! info and debug on stdout and warnings and errors on stderr, else everything on stderr.

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;

use crate::flags::{LogConfig, LogFormat};

/// Installs the global subscriber.
pub fn init(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{},kube=warn,tower=warn,hyper=warn",
        config.level
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let info_stdout = config.info_stdout;
    let low = move || -> Box<dyn std::io::Write> {
        if info_stdout {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::io::stderr())
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(by_level(std::io::stderr, low));
    match config.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Warnings and errors to `high`, everything else to `low`.
fn by_level<H, L>(high: H, low: L) -> impl for<'a> MakeWriter<'a> + Send + Sync + 'static
where
    H: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    L: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    high.with_max_level(Level::WARN).or_else(low)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn warnings_and_errors_go_apart_from_the_rest() {
        let (high, low) = (Buffer::default(), Buffer::default());
        let (h, l) = (high.clone(), low.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_ansi(false)
            .with_writer(by_level(move || h.clone(), move || l.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("d-line");
            tracing::info!("i-line");
            tracing::warn!("w-line");
            tracing::error!("e-line");
        });
        let (high, low) = (high.text(), low.text());
        assert!(low.contains("d-line") && low.contains("i-line"), "{low}");
        assert!(high.contains("w-line") && high.contains("e-line"), "{high}");
        assert!(!low.contains("w-line") && !high.contains("i-line"));
    }
}
