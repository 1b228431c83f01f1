//! The `SealedSecret` custom resource (`bitnami.com/v1alpha1`), shaped like upstream's CRD so that
//! objects written for either controller are valid for the other.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// The only condition type; Argo CD's health check reads it.
pub const CONDITION_SYNCED: &str = "Synced";

/// A Secret sealed for one cluster: each value encrypted to the cluster's sealing key.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bitnami.com",
    version = "v1alpha1",
    kind = "SealedSecret",
    plural = "sealedsecrets",
    namespaced,
    status = "SealedSecretStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[0].message"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[0].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretSpec {
    /// The shape of the Secret to create: metadata, type, immutability and templated data.
    #[serde(default, skip_serializing_if = "SecretTemplateSpec::is_empty")]
    pub template: SecretTemplateSpec,

    /// Deprecated v1 format: one sealed JSON-encoded Secret. Use `encryptedData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "legacy_data_schema")]
    pub data: Option<ByteString>,

    /// Item name → base64 value sealed to the cluster's key.
    #[serde(default, deserialize_with = "lenient_string_map")]
    #[schemars(schema_with = "encrypted_data_schema")]
    pub encrypted_data: BTreeMap<String, String>,
}

/// Describes the Secret created from a SealedSecret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplateSpec {
    /// Metadata of the Secret (name and namespace are always the SealedSecret's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "template_metadata_schema")]
    pub metadata: Option<ObjectMeta>,

    /// Secret type, e.g. `kubernetes.io/dockerconfigjson`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,

    /// Makes the Secret immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,

    /// Item name → template rendered with the decrypted items; `null` drops the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "template_data_schema")]
    pub data: Option<BTreeMap<String, Option<String>>>,
}

impl SecretTemplateSpec {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Observed state of a SealedSecret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretStatus {
    /// The generation of the SealedSecret the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Synced` first, then keyseal's record `keyseal.dev/SecretWritten`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SealedSecretCondition>,
}

/// One status condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretCondition {
    /// Condition type: `Synced`, or keyseal's `keyseal.dev/SecretWritten`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Last time the condition was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Last time `status` changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// A fixed, machine-readable reason (upstream leaves it empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail, the error text on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Upstream decodes `encryptedData` leniently (the CRD preserves unknown fields there): entries
/// whose value is not a string are kept as empty strings so unsealing names them in its error
/// instead of the whole object failing to decode.
fn lenient_string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match value {
        Some(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                _ => (k, String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    })
}

fn encrypted_data_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "type": "string" },
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn legacy_data_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "byte" })
}

fn template_data_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        // Nullable values, so `item: null` reaches the controller (which then drops the item)
        // instead of being pruned by the API server. Upstream's CRD lacks this, so there the
        // documented `null` never works; this only widens what the schema accepts.
        "additionalProperties": { "type": "string", "nullable": true }
    })
}

fn template_metadata_schema(_: &mut SchemaGenerator) -> Schema {
    let string_map =
        json_schema!({ "type": "object", "additionalProperties": { "type": "string" } });
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "annotations": string_map,
            "finalizers": { "type": "array", "items": { "type": "string" } },
            "labels": string_map,
            "name": { "type": "string" },
            "namespace": { "type": "string" }
        }
    })
}

/// The CustomResourceDefinition, structurally upstream's (`crds/` is compared with upstream's own
/// CRD by a test; the one deliberate difference is `template.data`'s nullable values, above).
///
/// The derive gives the shape; this pins what it cannot express: `encryptedData` required and
/// without a default (the API server answers 422 to a SealedSecret without it, as upstream), no
/// `nullable` but on `template.metadata` and `template.data`, the `apiVersion`/`kind`/`metadata`
/// properties and `listKind`.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    use kube::CustomResourceExt as _;

    fn string(description: &str) -> JSONSchemaProps {
        JSONSchemaProps {
            description: Some(description.to_owned()),
            type_: Some("string".to_owned()),
            ..JSONSchemaProps::default()
        }
    }
    /// Drops `nullable` below `schema` (the derive marks every `Option` nullable).
    fn not_nullable(schema: &mut JSONSchemaProps) {
        schema.nullable = None;
        for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
            not_nullable(child);
        }
        if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) =
            schema.items.as_mut()
        {
            not_nullable(items);
        }
    }

    let mut crd = SealedSecret::crd();
    crd.spec.names.list_kind = Some("SealedSecretList".to_owned());
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        schema.title = None;
        schema.description = Some(
            "A Secret sealed (encrypted) to the cluster's sealing key: only the controller can \
             unseal it, into a Secret of the same name and namespace."
                .to_owned(),
        );
        let properties = schema.properties.get_or_insert_with(Default::default);
        if let Some(status) = properties.get_mut("status") {
            not_nullable(status);
        }
        if let Some(spec) = properties.get_mut("spec") {
            spec.required = Some(vec!["encryptedData".to_owned()]);
            for (name, field) in spec.properties.iter_mut().flat_map(|p| p.iter_mut()) {
                if name == "template" {
                    for (name, field) in field.properties.iter_mut().flat_map(|p| p.iter_mut()) {
                        // Upstream's `nullable: true` stays on these two.
                        if name != "metadata" && name != "data" {
                            not_nullable(field);
                        }
                    }
                } else {
                    not_nullable(field);
                }
                // From `#[serde(default)]`: with it the API server would fill in `{}`.
                field.default = None;
            }
        }
        properties.insert(
            "apiVersion".to_owned(),
            string("The versioned schema of this object: bitnami.com/v1alpha1."),
        );
        properties.insert(
            "kind".to_owned(),
            string("The REST resource this object represents: SealedSecret."),
        );
        properties.insert(
            "metadata".to_owned(),
            JSONSchemaProps {
                type_: Some("object".to_owned()),
                ..JSONSchemaProps::default()
            },
        );
    }
    crd
}
