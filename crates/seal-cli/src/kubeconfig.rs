//! The kubeconfig: the default namespace offline, and an API client for the online modes.

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use crate::cli::KubeArgs;
use crate::error::{Result, err, io_text};

fn load(args: &KubeArgs) -> Result<Option<Kubeconfig>> {
    let loaded = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map(Some).map_err(|e| {
            let why = match &e {
                KubeconfigError::ReadConfig(io, _) => io_text(io),
                other => other.to_string(),
            };
            err(format!(
                "cannot read kubeconfig {} given with --kubeconfig: {why}",
                path.display()
            ))
        })?,
        // No kubeconfig at all is fine offline: the namespace falls back to `default`.
        None => Kubeconfig::read().ok(),
    };
    Ok(loaded)
}

/// Namespace for objects without one: -n, else the kubeconfig context's, else `default`.
pub fn default_namespace(args: &KubeArgs) -> Result<String> {
    if let Some(ns) = &args.namespace {
        return Ok(ns.clone());
    }
    let Some(config) = load(args)? else {
        return Ok("default".to_owned());
    };
    let context_name = args.context.clone().or(config.current_context.clone());
    let namespace = context_name
        .and_then(|name| config.contexts.iter().find(|c| c.name == name).cloned())
        .and_then(|c| c.context)
        .and_then(|c| c.namespace);
    Ok(namespace.unwrap_or_else(|| "default".to_owned()))
}

/// An API client built from the kubeconfig and the connection flags.
pub async fn client(args: &KubeArgs) -> Result<kube::Client> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        cluster: args.cluster.clone(),
        user: args.user.clone(),
    };
    let mut config = match load(args)? {
        Some(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| err(format!("invalid kubeconfig: {e}")))?,
        None => kube::Config::incluster().map_err(|_| {
            err("no kubeconfig found and not running in a cluster")
                .hint("set KUBECONFIG or --kubeconfig, or seal offline with --cert")
        })?,
    };
    // A CLI reports a failure at once instead of retrying a 503 from a stopped controller behind
    // the service proxy for minutes; a request is bounded unless --request-timeout says otherwise.
    config.default_retry = false;
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    if let Some(server) = &args.server {
        config.cluster_url = server
            .parse()
            .map_err(|e| err(format!("invalid --server {server:?}: {e}")))?;
    }
    if let Some(token) = &args.token {
        config.auth_info.token = Some(token.clone().into());
    }
    if args.insecure_skip_tls_verify {
        config.accept_invalid_certs = true;
    }
    if let Some(timeout) = args.request_timeout {
        config.read_timeout = Some(timeout);
        config.connect_timeout = Some(timeout);
    }
    kube::Client::try_from(config)
        .map_err(|e| err(format!("cannot create a Kubernetes client: {e}")))
}
