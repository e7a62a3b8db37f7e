//! Sharded installs (`install --shard NAME`): one more reconciler per shard, each reconciling
//! only the objects labelled with its name under [`SHARD_LABEL`], and the main reconciler
//! reconciling everything else.
//!
//! Each shard is a copy of the main reconciler's Deployment, Services and NetworkPolicy, with
//! every name and the pod label `app.kubernetes.io/name` suffixed with `-<shard>` (so the
//! Services of one reconciler never select the pods of another), artifact URLs advertised
//! through its own Service, and `--watch-label-selector` set: `SHARD_LABEL in (NAME)` for a
//! shard, `SHARD_LABEL notin (every shard)` for the main reconciler. The ServiceAccount and
//! RBAC are shared; each reconciler elects its own leader (the Lease is named after the
//! selector).

use gitops_reconciler::api::SHARD_LABEL;
use serde_json::Value;

use crate::commands::version::RECONCILER_DEPLOYMENT;
use crate::error::{Exit, Failure};

/// The name of the main reconciler's pods (`app.kubernetes.io/name`), which every shard
/// object derived from it carries with the shard's suffix.
const APP_LABEL: &str = "app.kubernetes.io/name";
/// The kinds an install copies for each shard.
const SHARDED_KINDS: [&str; 3] = ["Deployment", "Service", "NetworkPolicy"];
/// The longest shard name: the longest derived name (`webhook-receiver-<shard>`, a Service)
/// must stay a DNS label of at most 63 bytes.
const MAX_SHARD_NAME: usize = 63 - "webhook-receiver-".len();

/// The Deployment of `shard`'s reconciler (`None`: the main one).
pub fn deployment_name(shard: Option<&str>) -> String {
    match shard {
        Some(shard) => format!("{RECONCILER_DEPLOYMENT}-{shard}"),
        None => RECONCILER_DEPLOYMENT.to_owned(),
    }
}

/// Refuses names that cannot be a label value and a DNS label suffix, and duplicates.
pub fn validate(shards: &[String]) -> Result<(), Failure> {
    for (i, shard) in shards.iter().enumerate() {
        let bytes = shard.as_bytes();
        let valid = !bytes.is_empty()
            && shard.len() <= MAX_SHARD_NAME
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-');
        if !valid {
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "invalid shard name '{shard}': use 1 to {MAX_SHARD_NAME} characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
                ),
            ));
        }
        if shards[..i].contains(shard) {
            return Err(Failure::new(
                Exit::Usage,
                format!("shard '{shard}' is given twice"),
            ));
        }
    }
    Ok(())
}

/// The label selector of `shard`'s reconciler, or of the main one among `shards`.
pub fn selector(shard: Option<&str>, shards: &[String]) -> String {
    match shard {
        Some(shard) => format!("{SHARD_LABEL} in ({shard})"),
        None => format!("{SHARD_LABEL} notin ({})", shards.join(",")),
    }
}

/// Adds the reconcilers of `shards` to `objects` (the install manifests, already moved to
/// their namespace) and restricts the main one to the objects no shard takes. No change
/// without shards.
pub fn add(objects: &mut Vec<Value>, shards: &[String]) {
    if shards.is_empty() {
        return;
    }
    let copies = copies(objects, shards);
    for object in objects.iter_mut().filter(|o| o["kind"] == "Deployment") {
        add_arg(
            object,
            &format!("--watch-label-selector={}", selector(None, shards)),
        );
    }
    objects.extend(copies);
}

/// The objects `shards`' reconcilers add to `objects` (the install manifests, already moved
/// to their namespace).
pub fn copies(objects: &[Value], shards: &[String]) -> Vec<Value> {
    shards
        .iter()
        .flat_map(|shard| {
            objects
                .iter()
                .filter(|o| is_sharded(o))
                .map(move |o| copy_for(o, shard, shards))
        })
        .collect()
}

/// The Deployments of the shards' reconcilers in `namespace` (those carrying [`SHARD_LABEL`]).
pub async fn deployments(
    client: &kube::Client,
    namespace: &str,
) -> anyhow::Result<Vec<k8s_openapi::api::apps::v1::Deployment>> {
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), namespace);
    let params = kube::api::ListParams::default().labels(SHARD_LABEL);
    match api.list(&params).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
        Err(e) => Err(anyhow::Error::from(e).context(format!(
            "listing the reconcilers' Deployments in {namespace}"
        ))),
    }
}

/// The shards whose reconcilers `deployments` (the install namespace's) hold, from their
/// [`SHARD_LABEL`] labels.
pub fn installed(deployments: &[k8s_openapi::api::apps::v1::Deployment]) -> Vec<String> {
    let mut shards: Vec<String> = deployments
        .iter()
        .filter_map(|d| d.metadata.labels.as_ref()?.get(SHARD_LABEL).cloned())
        .collect();
    shards.sort();
    shards.dedup();
    shards
}

fn is_sharded(object: &Value) -> bool {
    SHARDED_KINDS.iter().any(|k| object["kind"] == *k)
        && object["metadata"]["labels"][APP_LABEL] == RECONCILER_DEPLOYMENT
}

/// `object` (a Deployment, Service or NetworkPolicy of the main reconciler) for `shard`.
fn copy_for(object: &Value, shard: &str, shards: &[String]) -> Value {
    let mut copy = object.clone();
    let suffixed = |name: &str| format!("{name}-{shard}");
    if let Some(name) = copy["metadata"]["name"].as_str().map(suffixed) {
        copy["metadata"]["name"] = name.into();
    }
    copy["metadata"]["labels"][SHARD_LABEL] = shard.into();
    let app = Value::from(suffixed(RECONCILER_DEPLOYMENT));
    // Every place the pods' name label is set or selected.
    for path in [
        "/metadata/labels",
        "/spec/selector/matchLabels",
        "/spec/template/metadata/labels",
        "/spec/selector",
        "/spec/podSelector/matchLabels",
    ] {
        if let Some(labels) = copy.pointer_mut(path).and_then(Value::as_object_mut)
            && labels.contains_key(APP_LABEL)
        {
            labels.insert(APP_LABEL.to_owned(), app.clone());
        }
    }
    if copy["kind"] == "Deployment" {
        copy["spec"]["template"]["metadata"]["labels"][SHARD_LABEL] = shard.into();
        if let Some(args) = container_args(&mut copy) {
            for arg in args.iter_mut() {
                if let Some(address) = arg
                    .as_str()
                    .and_then(|a| a.strip_prefix("--storage-adv-addr="))
                    .and_then(|a| a.strip_prefix(RECONCILER_DEPLOYMENT))
                    .map(str::to_owned)
                {
                    *arg = format!(
                        "--storage-adv-addr={}{address}",
                        suffixed(RECONCILER_DEPLOYMENT)
                    )
                    .into();
                }
            }
        }
        add_arg(
            &mut copy,
            &format!("--watch-label-selector={}", selector(Some(shard), shards)),
        );
    }
    copy
}

fn container_args(deployment: &mut Value) -> Option<&mut Vec<Value>> {
    deployment
        .pointer_mut("/spec/template/spec/containers")?
        .as_array_mut()?
        .iter_mut()
        .find(|c| c["name"] == "reconciler")?
        .get_mut("args")?
        .as_array_mut()
}

fn add_arg(deployment: &mut Value, arg: &str) {
    if let Some(args) = container_args(deployment) {
        args.push(arg.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(shards: &[&str]) -> Vec<Value> {
        let shards: Vec<String> = shards.iter().map(|s| s.to_string()).collect();
        let mut objects = crate::commands::install::manifests("gitops-system", None, false)
            .expect("the embedded manifests");
        add(&mut objects, &shards);
        objects
    }

    fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn args(deployment: &Value) -> Vec<&str> {
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect()
    }

    #[test]
    fn without_shards_nothing_changes() {
        let plain = crate::commands::install::manifests("gitops-system", None, false).unwrap();
        assert_eq!(install(&[]), plain);
        assert!(
            !args(named(&plain, "Deployment", "gitops-reconciler"))
                .iter()
                .any(|a| a.starts_with("--watch-label-selector"))
        );
    }

    #[test]
    fn each_shard_gets_its_own_reconciler_services_and_policy() {
        let objects = install(&["shard1", "shard2"]);
        let plain = crate::commands::install::manifests("gitops-system", None, false).unwrap();
        // The main reconciler's objects, plus a Deployment, two Services and a NetworkPolicy
        // per shard.
        assert_eq!(objects.len(), plain.len() + 2 * 4);
        let main = named(&objects, "Deployment", "gitops-reconciler");
        assert!(args(main).contains(
            &"--watch-label-selector=sharding.kubectl-gitops.io/key notin (shard1,shard2)"
        ));
        for shard in ["shard1", "shard2"] {
            let app = format!("gitops-reconciler-{shard}");
            let deployment = named(&objects, "Deployment", &app);
            let args = args(deployment);
            assert!(
                args.contains(
                    &format!("--watch-label-selector=sharding.kubectl-gitops.io/key in ({shard})")
                        .as_str()
                )
            );
            assert!(
                args.contains(
                    &format!("--storage-adv-addr={app}.$(POD_NAMESPACE).svc.cluster.local.:80")
                        .as_str()
                )
            );
            assert_eq!(args.iter().filter(|a| a.starts_with("--watch")).count(), 1);
            assert_eq!(
                deployment["spec"]["selector"]["matchLabels"][APP_LABEL],
                app
            );
            assert_eq!(
                deployment["spec"]["template"]["metadata"]["labels"][APP_LABEL],
                app
            );
            assert_eq!(deployment["metadata"]["labels"][SHARD_LABEL], shard);
            for service in [app.clone(), format!("webhook-receiver-{shard}")] {
                assert_eq!(
                    named(&objects, "Service", &service)["spec"]["selector"][APP_LABEL],
                    app
                );
            }
            assert_eq!(
                named(&objects, "NetworkPolicy", &app)["spec"]["podSelector"]["matchLabels"]
                    [APP_LABEL],
                app
            );
        }
        // The main reconciler's Services still select only its own pods.
        assert_eq!(
            named(&objects, "Service", "gitops-reconciler")["spec"]["selector"][APP_LABEL],
            "gitops-reconciler"
        );
        assert_eq!(
            installed(
                &objects
                    .iter()
                    .filter(|o| o["kind"] == "Deployment")
                    .map(|o| serde_json::from_value(o.clone()).unwrap())
                    .collect::<Vec<_>>()
            ),
            ["shard1", "shard2"]
        );
    }

    #[test]
    fn shard_names_are_dns_labels_given_once() {
        let ok =
            |names: &[&str]| validate(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let longest = "x".repeat(MAX_SHARD_NAME);
        let too_long = "x".repeat(MAX_SHARD_NAME + 1);
        assert!(ok(&["a", "shard-1", longest.as_str()]).is_ok());
        for bad in ["", "A", "-a", "a-", "a_b", "a.b", too_long.as_str()] {
            let e = ok(&[bad]).expect_err(bad);
            assert!(e.to_string().contains("invalid shard name"), "{e}");
        }
        let twice = ok(&["a", "b", "a"]).expect_err("duplicate");
        assert!(twice.to_string().contains("'a' is given twice"), "{twice}");
    }
}
