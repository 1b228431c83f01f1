//! The modes that ask the controller: `--validate` and `--re-encrypt`.

use keyseal_api::SealedSecret;

use crate::cli::{KubeArgs, SealArgs};
use crate::controller_client::ControllerProxy;
use crate::error::{Result, err, object_name};
use crate::io::Input;

/// `--validate`: fails on the first SealedSecret of `input` the controller cannot decrypt.
pub fn validate(input: &Input, flags: &SealArgs, kube: &KubeArgs) -> Result<()> {
    let sealed = input.sealed_secrets()?;
    crate::runtime::block_on(async {
        let proxy = ControllerProxy::connect(kube, flags).await?;
        for ss in &sealed {
            let body =
                serde_json::to_vec(ss).map_err(|e| err(format!("cannot encode JSON: {e}")))?;
            if !proxy.verify(body).await? {
                let name = object_name(
                    ss.metadata.namespace.as_deref(),
                    ss.metadata.name.as_deref(),
                );
                return Err(err(format!("{}: unable to decrypt sealed secret {name}", input.name))
                    .hint("it was sealed with another cluster's key, or for another namespace, name or scope"));
            }
        }
        Ok(())
    })
}

/// `--re-encrypt`: every SealedSecret of `input` re-sealed by the controller with its newest key.
pub fn re_encrypt(input: &Input, flags: &SealArgs, kube: &KubeArgs) -> Result<Vec<SealedSecret>> {
    let sealed = input.sealed_secrets()?;
    crate::runtime::block_on(async {
        let proxy = ControllerProxy::connect(kube, flags).await?;
        let mut out = Vec::new();
        for ss in &sealed {
            let body =
                serde_json::to_vec(ss).map_err(|e| err(format!("cannot encode JSON: {e}")))?;
            let text = proxy.rotate(body).await?;
            let mut rotated: SealedSecret = serde_json::from_str(&text).map_err(|e| {
                err(format!(
                    "the controller's /v1/rotate answer is not a SealedSecret: {e}"
                ))
            })?;
            rotated.metadata.creation_timestamp = None;
            rotated.metadata.deletion_timestamp = None;
            rotated.metadata.generation = None;
            out.push(rotated);
        }
        Ok(out)
    })
}
