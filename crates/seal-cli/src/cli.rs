//! Command-line flags, compatible with kubeseal's: same names, same defaults, and the same
//! `SEALED_SECRETS_<FLAG>` environment variables.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyseal_api::Scope;

/// Seal Kubernetes Secrets so they can be stored in Git; only the cluster can unseal them.
///
/// Reads a Secret (YAML or JSON, several documents allowed) from stdin or -f and writes a
/// SealedSecret to stdout or -w. Works offline with --cert.
#[derive(Parser, Debug)]
#[command(
    name = "keyseal",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    // As kubeseal (pflag): a flag given twice takes its last value, so wrappers can append
    // overrides (`keyseal --kubeconfig a … --kubeconfig b`). Lists (--from-file,
    // --recovery-private-key) still accumulate.
    args_override_self = true
)]
pub struct Cli {
    /// keyseal-only commands.
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub seal: SealArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub keyvault: KeyVaultArgs,
}

/// How `--cert azurekeyvault://…` reaches Azure Key Vault. The credential comes from the usual
/// `AZURE_*` variables, as with Azure's own SDKs and CLIs.
#[derive(Args, Debug, Default, Clone)]
#[command(next_help_heading = "Key Vault (--cert and --recovery-private-key azurekeyvault://…)")]
pub struct KeyVaultArgs {
    /// The credential: workload-identity, managed-identity, client-secret, client-certificate or
    /// azure-cli. Default: inferred from the AZURE_* variables (a federated token file, then a
    /// client secret, then a certificate, else the managed identity).
    #[arg(long, env = "KEYSEAL_KEYVAULT_CREDENTIAL", value_name = "KIND", value_parser = parse_credential)]
    pub keyvault_credential: Option<keyseal_keyvault::CredentialKind>,
    /// A PEM file of CA certificates to trust besides the system's, for a vault or token service
    /// behind a private CA (private endpoints, TLS-inspecting proxies). SSL_CERT_FILE is honoured
    /// too.
    #[arg(long, env = "KEYSEAL_KEYVAULT_CA_FILE", value_name = "FILE")]
    pub keyvault_ca_file: Option<PathBuf>,
    /// Do not check that the vault's authentication challenge names a resource of the vault's
    /// own domain (the Azure SDK's `verify_challenge_resource`). Only for vaults outside the
    /// public and sovereign clouds' vault domains, such as Azure Stack Hub or a test server.
    #[arg(long, env = "KEYSEAL_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION")]
    pub keyvault_disable_challenge_resource_verification: bool,
}

fn parse_credential(s: &str) -> Result<keyseal_keyvault::CredentialKind, String> {
    s.parse()
        .map_err(|e: keyseal_keyvault::BackupError| e.to_string())
}

/// keyseal-only commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Manage sealing keys: generate, publish the certificate, back up and restore.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Sealing-key commands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a sealing key pair exactly as the controller would: RSA-4096 and a self-signed
    /// certificate; optionally also the key Secret to install it in a cluster.
    Generate(GenerateArgs),
    /// Publish a sealing certificate to Azure Key Vault as `<prefix>-sealing-cert`, for offline
    /// sealing with `--cert azurekeyvault://…`; prints that reference. The same certificate
    /// again writes nothing.
    PublishCert(PublishCertArgs),
    /// Back up the cluster's sealing keys (the controller's key Secrets) to Azure Key Vault,
    /// each read back and verified by fingerprint, or to a file in the format of `kubectl get
    /// secret -o yaml` (--to-file). Backups are never overwritten.
    Backup(BackupArgs),
    /// Write backed-up sealing keys (from Azure Key Vault or --from-file) back into the cluster
    /// as the controller's key Secrets, upstream's layout; keys already there are left alone and
    /// a different key under the same name is refused.
    Restore(RestoreArgs),
    /// The sealing keys' inventory: each key's fingerprint, creation time and state in the
    /// cluster (sealing, active, pending-backup, retired), and with --keyvault-url whether the
    /// vault holds a backup that loads and matches it.
    List(ListArgs),
}

/// Where the controller keeps its key Secrets.
#[derive(Args, Debug, Clone)]
pub struct KeySecretsArgs {
    /// Namespace of the controller (and its key Secrets).
    #[arg(
        long,
        env = "SEALED_SECRETS_CONTROLLER_NAMESPACE",
        default_value = "kube-system"
    )]
    pub controller_namespace: String,
    /// Name prefix of the key Secrets (the controller's --key-prefix).
    #[arg(long, default_value = "sealed-secrets-key")]
    pub key_prefix: String,
}

/// The vault and the cluster's prefix in it.
#[derive(Args, Debug, Clone)]
pub struct VaultTargetArgs {
    /// The vault, `https://<vault-name>.vault.azure.net`.
    #[arg(long, env = "KEYSEAL_KEYVAULT_URL", value_name = "URL")]
    pub keyvault_url: Option<String>,
    /// The cluster's name prefix in the vault (the controller's --keyvault-prefix).
    #[arg(long, env = "KEYSEAL_KEYVAULT_PREFIX", value_name = "PREFIX")]
    pub keyvault_prefix: Option<String>,
}

/// Where keys are backed up and restored: the cluster's key Secrets and the vault.
#[derive(Args, Debug)]
pub struct KeyPlaces {
    #[command(flatten)]
    pub vault: VaultTargetArgs,
    #[command(flatten)]
    pub secrets: KeySecretsArgs,
    #[command(flatten)]
    pub keyvault: KeyVaultArgs,
}

/// Arguments of `keyseal keys backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Write the key Secrets to this file (YAML List, mode 0600) instead of the vault.
    #[arg(long, value_name = "FILE")]
    pub to_file: Option<PathBuf>,
    #[command(flatten)]
    pub place: KeyPlaces,
}

/// Arguments of `keyseal keys list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub place: KeyPlaces,
}

/// Arguments of `keyseal keys restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Read the key Secrets from this file (a Secret, SecretList or List, e.g. from `keys
    /// backup --to-file` or `kubectl get secret -o yaml`) instead of the vault.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// Show what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub place: KeyPlaces,
}

/// Arguments of `keyseal keys publish-cert`.
#[derive(Args, Debug)]
pub struct PublishCertArgs {
    /// The certificate (PEM), e.g. from --fetch-cert.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// The vault, `https://<vault-name>.vault.azure.net`.
    #[arg(long, env = "KEYSEAL_KEYVAULT_URL", value_name = "URL")]
    pub keyvault_url: String,
    /// The cluster's name prefix in the vault (the controller's --keyvault-prefix).
    #[arg(
        long,
        visible_alias = "keyvault-prefix",
        env = "KEYSEAL_KEYVAULT_PREFIX"
    )]
    pub prefix: String,
    #[command(flatten)]
    pub keyvault: KeyVaultArgs,
}

/// Arguments of `keyseal keys generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Where to write the private key (PKCS#1 PEM, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub key_out: std::path::PathBuf,
    /// Where to write the certificate (PEM) to seal with.
    #[arg(long, value_name = "FILE")]
    pub cert_out: std::path::PathBuf,
    /// Also write the key Secret (upstream's layout, mode 0600) for `kubectl apply`.
    #[arg(long, value_name = "FILE")]
    pub secret_out: Option<std::path::PathBuf>,
    /// Namespace of the key Secret (the controller's namespace).
    #[arg(long, default_value = "kube-system")]
    pub secret_namespace: String,
    /// Name prefix of the key Secret (the controller's --key-prefix).
    #[arg(long, default_value = "sealed-secrets-key")]
    pub key_prefix: String,
    /// RSA key size in bits.
    #[arg(long, default_value_t = 4096, value_parser = parse_key_size)]
    pub key_size: usize,
    /// Certificate subject common name (the controller's --my-cn); empty by default.
    #[arg(long, default_value = "")]
    pub my_cn: String,
    /// Certificate validity (the controller's --key-ttl), e.g. 87600h.
    #[arg(long, default_value = "87600h", value_parser = parse_duration)]
    pub key_ttl: std::time::Duration,
}

/// Output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Pretty-printed JSON.
    Json,
    /// YAML, each object preceded by `---`.
    Yaml,
}

/// kubeseal's own flags.
#[derive(Args, Debug)]
pub struct SealArgs {
    /// Certificate / public key file or URL (file path, http://, https://, file://, or a
    /// certificate published in Azure Key Vault: azurekeyvault://<vault-host>/<secret>) to seal
    /// with. Overrides --controller-*.
    #[arg(long, env = "SEALED_SECRETS_CERT", value_name = "FILE|URL")]
    pub cert: Option<String>,

    /// Write the certificate to stdout, for later use with --cert.
    #[arg(long, env = "SEALED_SECRETS_FETCH_CERT")]
    pub fetch_cert: bool,

    /// Name of the sealed-secrets controller's Service.
    #[arg(
        long,
        env = "SEALED_SECRETS_CONTROLLER_NAME",
        default_value = "sealed-secrets-controller"
    )]
    pub controller_name: String,

    /// Namespace of the sealed-secrets controller.
    #[arg(
        long,
        env = "SEALED_SECRETS_CONTROLLER_NAMESPACE",
        default_value = "kube-system"
    )]
    pub controller_namespace: String,

    /// Output format for sealed secrets (a -w file ending in .yaml or .yml implies yaml).
    #[arg(
        short = 'o',
        long,
        env = "SEALED_SECRETS_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub format: Format,

    /// Secret (input) file; stdin when absent.
    #[arg(
        short = 'f',
        long,
        env = "SEALED_SECRETS_SECRET_FILE",
        value_name = "FILE"
    )]
    pub secret_file: Option<PathBuf>,

    /// Sealed-secret (output) file, written atomically and only if everything succeeded.
    #[arg(
        short = 'w',
        long,
        env = "SEALED_SECRETS_SEALED_SECRET_FILE",
        value_name = "FILE"
    )]
    pub sealed_secret_file: Option<PathBuf>,

    /// Scope: strict, namespace-wide or cluster-wide. Without it, the scope annotations on
    /// the input Secret decide (strict when there are none).
    #[arg(long, env = "SEALED_SECRETS_SCOPE", value_parser = parse_scope)]
    pub scope: Option<Scope>,

    /// Seal one raw value (stdin or --from-file) and print only its base64.
    #[arg(long, env = "SEALED_SECRETS_RAW")]
    pub raw: bool,

    /// Name of the SealedSecret (required with --raw in strict scope).
    #[arg(long, env = "SEALED_SECRETS_NAME")]
    pub name: Option<String>,

    /// (only with --raw) read the value from a file: `[key=]path`, as in kubectl.
    #[arg(
        long,
        env = "SEALED_SECRETS_FROM_FILE",
        value_delimiter = ',',
        value_name = "[KEY=]PATH"
    )]
    pub from_file: Vec<String>,

    /// Merge the input Secret's items into an existing SealedSecret file, in place.
    #[arg(long, env = "SEALED_SECRETS_MERGE_INTO", value_name = "FILE")]
    pub merge_into: Option<PathBuf>,

    /// Re-encrypt a SealedSecret with the cluster's newest key (through the controller).
    #[arg(long, visible_alias = "rotate", env = "SEALED_SECRETS_RE_ENCRYPT")]
    pub re_encrypt: bool,

    /// Check that the controller can decrypt the input SealedSecret.
    #[arg(long, env = "SEALED_SECRETS_VALIDATE")]
    pub validate: bool,

    /// Decrypt SealedSecrets from the input with --recovery-private-key (disaster recovery).
    #[arg(long, env = "SEALED_SECRETS_RECOVERY_UNSEAL")]
    pub recovery_unseal: bool,

    /// Private key file(s) for --recovery-unseal: PEM keys, or a backup of the controller's key
    /// Secret(s) as JSON/YAML (Secret, SecretList or List), or every key backed up in Azure Key
    /// Vault under a prefix: azurekeyvault://<vault-host>/<prefix>. Repeat or separate with commas.
    #[arg(
        long,
        env = "SEALED_SECRETS_RECOVERY_PRIVATE_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub recovery_private_key: Vec<PathBuf>,

    /// Allow a Secret without data.
    #[arg(long, env = "SEALED_SECRETS_ALLOW_EMPTY_DATA")]
    pub allow_empty_data: bool,

    /// Print version information and exit.
    #[arg(long)]
    pub version: bool,
}

/// The usual kubectl connection flags.
#[derive(Args, Debug, Default, Clone)]
pub struct KubeArgs {
    /// Path to a kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "SEALED_SECRETS_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Secret (default: the input's, then the kubeconfig context's, then `default`).
    #[arg(short = 'n', long, env = "SEALED_SECRETS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long, env = "SEALED_SECRETS_CONTEXT")]
    pub context: Option<String>,
    /// Kubeconfig cluster to use.
    #[arg(long, env = "SEALED_SECRETS_CLUSTER")]
    pub cluster: Option<String>,
    /// Kubeconfig user to use.
    #[arg(long, env = "SEALED_SECRETS_USER")]
    pub user: Option<String>,
    /// The address of the Kubernetes API server.
    #[arg(short = 's', long, env = "SEALED_SECRETS_SERVER")]
    pub server: Option<String>,
    /// Bearer token for the API server.
    #[arg(long, env = "SEALED_SECRETS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Do not verify the API server's certificate (insecure).
    #[arg(long, env = "SEALED_SECRETS_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
    /// Timeout of API requests, e.g. `30s` or `1m`.
    #[arg(long, env = "SEALED_SECRETS_REQUEST_TIMEOUT", value_parser = parse_duration)]
    pub request_timeout: Option<std::time::Duration>,
}

fn parse_key_size(s: &str) -> Result<usize, String> {
    match s {
        "2048" | "3072" | "4096" | "8192" => Ok(s.parse().unwrap_or(4096)),
        _ => Err("must be one of: 2048, 3072, 4096, 8192".to_owned()),
    }
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

/// Parses kubectl-style durations: a bare number of seconds, or `<n>s`, `<n>m`, `<n>h`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 30s, 5m, 1h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration {s:?} (use e.g. 30s, 5m, 1h)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn flag_definitions_are_consistent() {
        super::Cli::command().debug_assert();
    }

    /// kubeseal binds every flag to `SEALED_SECRETS_<FLAG>`; a typo in one `env = …` would
    /// silently break a user's environment.
    #[test]
    fn kubeseal_flags_read_sealed_secrets_variables() {
        let command = super::Cli::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long.starts_with("keyvault-") || ["version", "help"].contains(&long) {
                continue;
            }
            let expected = format!("SEALED_SECRETS_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
            checked += 1;
        }
        assert_eq!(checked, 26, "kubeseal's flags (SealArgs and KubeArgs)");
    }

    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("30").unwrap().as_secs(), 30);
        assert_eq!(super::parse_duration("2m").unwrap().as_secs(), 120);
        assert!(super::parse_duration("soon").is_err());
    }
}
