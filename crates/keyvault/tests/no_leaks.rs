//! Captured logs, errors and Debug output of backups never contain key material. Its own test
//! binary: the log capture is per thread, and no other test may run beside it.

mod common;

use std::sync::{Arc, Mutex};

use common::{assert_no_key_material, backups, emulator, key_secret, unique};
use keyseal_keyvault::{BackupError, KEY_CONTENT_TYPE, KeyBackupStore, SecretMeta, SecretText};

/// Captures everything the crate logs (at every level) during backups, restores and failures,
/// plus the Debug and Display of every value and error, and greps it for key material.
#[tokio::test]
async fn no_key_material_in_logs_errors_or_debug_output() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let kv = emulator().await;
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut seen = String::new();
    let b = backups(&kv, &unique("g"));
    let (secret, _) = key_secret("sealed-secrets-keyggggg");
    let record = b.backup_key(&secret).await.unwrap();
    seen += &format!("{record:?}\n");
    let restored = b.restore_all().await.unwrap();
    seen += &format!("{restored:?}\n");
    let stored = b.store().get(&record.name).await.unwrap().unwrap();
    seen += &format!("{stored:?}\n{:?}\n", stored.value);
    let (other, _) = key_secret("sealed-secrets-keyggggg");
    let conflict = b.backup_key(&other).await.unwrap_err();
    seen += &format!("{conflict}\n{conflict:?}\n");
    // A tampered backup: verification fails without quoting the stored value.
    let mut tampered = secret.clone();
    tampered.metadata.name = Some("sealed-secrets-keyhhhhh".to_owned());
    let name = b.backup_name("sealed-secrets-keyhhhhh").unwrap();
    let mut json = serde_json::to_string(&tampered).unwrap();
    json.truncate(json.len() - 10);
    let meta = SecretMeta {
        content_type: Some(KEY_CONTENT_TYPE.to_owned()),
        ..SecretMeta::default()
    };
    b.store()
        .put(&name, &SecretText::new(json), &meta)
        .await
        .unwrap();
    let broken = b.backup_key(&tampered).await.unwrap_err();
    assert!(
        matches!(broken, BackupError::Verification { .. }),
        "{broken}"
    );
    seen += &format!("{broken}\n{broken:?}\n");
    drop(_guard);

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("key backed up and verified"), "{logs}");
    assert_no_key_material(&logs);
    assert_no_key_material(&seen);
}
