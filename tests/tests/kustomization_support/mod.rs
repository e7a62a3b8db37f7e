//! Shared pieces of the Kustomization conformance tests: a kube client for the cluster under
//! test and the apply stage driven directly (plan → apply → prune), as the controller does.
#![allow(dead_code)] // each test file uses a different subset

use std::time::Duration;

use gitops_reconciler::apply::{self, ApplyOptions, DriftRules, Owner, Resolver};
use serde_json::Value;

/// A client for `GITOPS_TEST_KUBECONFIG`.
pub async fn client() -> kube::Client {
    let path = gitops_conformance::kubeconfig();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("usable kubeconfig");
    kube::Client::try_from(config).expect("client")
}

pub fn owner(name: &str, namespace: &str) -> Owner {
    Owner {
        name: name.into(),
        namespace: namespace.into(),
    }
}

pub fn options(owner: Owner) -> ApplyOptions {
    ApplyOptions {
        owner,
        force: false,
        concurrency: 8,
        drift: DriftRules::default(),
        definitions_timeout: Duration::from_secs(30),
    }
}

/// Parses a multi-document YAML manifest.
pub fn objects(yaml: &str) -> Vec<Value> {
    gitops_reconciler::yaml::from_str_multi(yaml).expect("valid test YAML")
}

/// plan + apply, the way the controller runs them.
pub async fn plan_and_apply(
    client: &kube::Client,
    resolver: &Resolver,
    yaml: &str,
    opts: &ApplyOptions,
) -> Result<(apply::Plan, apply::ChangeSet), apply::ApplyError> {
    let plan = apply::plan(client, resolver, objects(yaml), &opts.owner).await?;
    let changes = apply::apply(client, resolver, &plan, opts).await?;
    Ok((plan, changes))
}

/// `kubectl get KIND NAME -n NS -o json`, or None when it does not exist.
pub fn get(ns: &str, kind: &str, name: &str) -> Option<Value> {
    let res = gitops_conformance::kubectl(&["-n", ns, "get", kind, name, "-o", "json"], None);
    if !res.success {
        assert!(
            res.stderr.contains("NotFound") || res.stderr.contains("not found"),
            "kubectl get {kind} {name}: {}",
            res.stderr
        );
        return None;
    }
    Some(serde_json::from_str(&res.stdout).expect("kubectl prints JSON"))
}
