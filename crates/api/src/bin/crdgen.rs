//! Prints the SealedSecret CRD as YAML: `cargo run -p keyseal-api --bin crdgen > crds/sealedsecret.yaml`.

#![forbid(unsafe_code)]

fn main() {
    print!("{}", keyseal_api::crd_yaml());
}
