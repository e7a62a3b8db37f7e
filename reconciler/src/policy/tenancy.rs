//! The tenancy re-check after transforms (see [`super::Tenancy`]).

use super::{
    ClusterScopes, KindScope, ObjectRef, PolicyContext, PolicyError, Tenancy, output::group,
};
use crate::build::resource::str_at;
use gitops_policy_target_namespace::CLUSTER_SCOPED;
use serde_json::Value;
use std::cell::OnceCell;
use std::collections::{BTreeSet, HashSet};

/// Scope information for the check: the built-in table, the cluster's discovery data, and
/// the cluster-scoped kinds CRDs of the build itself define (not served yet when the build
/// installs them).
struct Scope<'a> {
    discovered: BTreeSet<(&'a str, &'a str)>,
    /// Namespaced kinds CRDs of the build define.
    namespaced: BTreeSet<(&'a str, &'a str)>,
    discovery: Option<&'a ClusterScopes>,
}

impl<'a> Scope<'a> {
    fn new(tenancy: &'a Tenancy, objects: &'a [Value]) -> Scope<'a> {
        let mut discovered: BTreeSet<(&str, &str)> = tenancy
            .cluster_scoped_kinds
            .iter()
            .map(|k| {
                let (kind, group) = k.split_once('.').unwrap_or((k.as_str(), ""));
                (group, kind)
            })
            .collect();
        let mut namespaced = BTreeSet::new();
        for crd in objects
            .iter()
            .filter(|o| str_at(o, &["kind"]) == "CustomResourceDefinition")
        {
            let key = (
                str_at(crd, &["spec", "group"]),
                str_at(crd, &["spec", "names", "kind"]),
            );
            if str_at(crd, &["spec", "scope"]) == "Cluster" {
                discovered.insert(key);
            } else {
                namespaced.insert(key);
            }
        }
        Scope {
            discovered,
            namespaced,
            discovery: tenancy.discovery.as_ref(),
        }
    }

    /// `None` if the object is namespaced; else why it counts as cluster-scoped.
    fn cluster_scoped(&self, object: &ObjectRef) -> Option<&'static str> {
        const CLUSTER: &str = "adds a cluster-scoped object that was not in the build";
        let key = (group(&object.api_version), object.kind.as_str());
        if CLUSTER_SCOPED.binary_search(&key).is_ok() || self.discovered.contains(&key) {
            return Some(CLUSTER);
        }
        let discovery = self.discovery?;
        if self.namespaced.contains(&key) {
            return None;
        }
        match discovery.scope(key.0, key.1) {
            Some(KindScope::Cluster) => Some(CLUSTER),
            Some(KindScope::Namespaced) => None,
            // Served by nobody, even after reading discovery again: its scope is unknown, so
            // only the same object of the input may pass (fail closed).
            None => Some(
                "adds an object of a kind the cluster does not serve (so its scope is unknown) that was not in the build",
            ),
        }
    }
}

/// The rules of one pipeline run and what the check needs of its input, borrowed from the
/// input objects: built once per run, so checking a transform's output costs nothing per
/// unchanged object.
pub(crate) struct Input<'a> {
    rules: &'a Tenancy,
    scope: Scope<'a>,
    objects: &'a [Value],
    /// Namespaces objects may be in: those of the input, the target namespace and the allowed
    /// ones.
    namespaces: BTreeSet<&'a str>,
    /// (group, kind, name) of every input object, built when a transform returns a
    /// cluster-scoped object (rare), not before.
    identities: OnceCell<HashSet<(&'a str, &'a str, &'a str)>>,
}

impl<'a> Input<'a> {
    pub(crate) fn new(ctx: &'a PolicyContext, rules: &'a Tenancy, objects: &'a [Value]) -> Self {
        let mut namespaces: BTreeSet<&str> = objects
            .iter()
            .map(|o| str_at(o, &["metadata", "namespace"]))
            .filter(|ns| !ns.is_empty())
            .collect();
        namespaces.extend(ctx.target_namespace.as_deref());
        namespaces.extend(rules.allowed_namespaces.iter().map(String::as_str));
        Input {
            rules,
            scope: Scope::new(rules, objects),
            objects,
            namespaces,
            identities: OnceCell::new(),
        }
    }

    /// True if an input object has `object`'s group, kind and name.
    fn has(&self, object: &ObjectRef) -> bool {
        self.identities
            .get_or_init(|| {
                self.objects
                    .iter()
                    .map(|o| {
                        (
                            group(str_at(o, &["apiVersion"])),
                            str_at(o, &["kind"]),
                            str_at(o, &["metadata", "name"]),
                        )
                    })
                    .collect()
            })
            .contains(&(
                group(&object.api_version),
                object.kind.as_str(),
                object.name.as_str(),
            ))
    }

    /// Checks the objects step `policy` changed or added (an object a step returned unchanged
    /// was checked when it was last changed, or is an input object).
    pub(crate) fn check<'o>(
        &self,
        changed: impl IntoIterator<Item = &'o ObjectRef>,
        policy: &str,
    ) -> Result<(), PolicyError> {
        for object in changed {
            if let Some(reason) = self.scope.cluster_scoped(object) {
                if !self.rules.allow_cluster_scoped && !self.has(object) {
                    return Err(PolicyError::Tenancy {
                        policy: policy.to_owned(),
                        object: Box::new(object.clone()),
                        reason: reason.to_owned(),
                    });
                }
            } else if let Some(ns) = object.namespace.as_deref()
                && !self.namespaces.contains(ns)
            {
                return Err(PolicyError::Tenancy {
                    policy: policy.to_owned(),
                    object: Box::new(object.clone()),
                    reason: format!(
                        "namespace {ns:?} is neither the target namespace, a namespace of the build, nor an allowed namespace"
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object_ref(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn changed_objects_stay_in_known_namespaces_and_cluster_objects_of_the_build() {
        let objects = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "team"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"}}),
        ];
        let ctx = PolicyContext {
            target_namespace: Some("target".to_owned()),
            ..PolicyContext::default()
        };
        let rules = Tenancy {
            allowed_namespaces: vec!["extra".to_owned()],
            ..Tenancy::default()
        };
        let input = Input::new(&ctx, &rules, &objects);
        let check_one = |r: ObjectRef| input.check([&r], "p");

        for ns in ["team", "target", "extra"] {
            assert!(
                check_one(object_ref("v1", "ConfigMap", Some(ns), "b")).is_ok(),
                "{ns}"
            );
        }
        let e = check_one(object_ref("v1", "ConfigMap", Some("kube-system"), "b")).unwrap_err();
        assert!(e.to_string().contains("kube-system"), "{e}");
        // A cluster-scoped object of the build may be changed (any version of its group)...
        assert!(
            check_one(object_ref(
                "rbac.authorization.k8s.io/v1beta1",
                "ClusterRole",
                None,
                "reader"
            ))
            .is_ok()
        );
        // ...but none may be added.
        let e = check_one(object_ref(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            "admin",
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("adds a cluster-scoped object"),
            "{e}"
        );
        // A cluster-scoped custom kind, known from discovery or from a CRD of the build, is
        // refused like a built-in one; unknown to both, it counts as namespaced.
        let issuer = object_ref("cert-manager.io/v1", "ClusterIssuer", None, "evil");
        assert!(check_one(issuer.clone()).is_ok());
        let discovered = Tenancy {
            cluster_scoped_kinds: vec!["ClusterIssuer.cert-manager.io".to_owned()],
            ..Tenancy::default()
        };
        let e = Input::new(&ctx, &discovered, &objects)
            .check([&issuer], "p")
            .unwrap_err();
        assert!(e.to_string().contains("ClusterIssuer evil"), "{e}");
        let mut with_crd = objects.clone();
        with_crd.push(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "clusterissuers.cert-manager.io"},
            "spec": {"group": "cert-manager.io", "scope": "Cluster", "names": {"kind": "ClusterIssuer"}}}));
        assert!(
            Input::new(&ctx, &rules, &with_crd)
                .check([&issuer], "p")
                .is_err()
        );
        let admin = Tenancy {
            allow_cluster_scoped: true,
            ..Tenancy::default()
        };
        let input = Input::new(&ctx, &admin, &objects);
        let added = object_ref("v1", "Namespace", None, "new");
        assert!(input.check([&added], "p").is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_discovery_a_kind_created_after_the_table_was_read_is_learnt_and_unknown_kinds_fail_closed()
     {
        use crate::policy::{KindScope, KindTable};
        use std::sync::atomic::{AtomicUsize, Ordering};
        // The first read knows no ClusterIssuer; every later one does (its CRD was created in
        // between).
        let reads = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let scopes = ClusterScopes::with_fetch(std::time::Duration::ZERO, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let mut table = KindTable::default();
                table.insert("", "ConfigMap", KindScope::Namespaced);
                if n >= 1 {
                    table.insert("cert-manager.io", "ClusterIssuer", KindScope::Cluster);
                }
                Ok(table)
            })
        });
        scopes.table().await.expect("first read");
        let rules = Tenancy {
            discovery: Some(scopes),
            ..Tenancy::default()
        };
        let results = tokio::task::spawn_blocking(move || {
            let objects =
                vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "team"}})];
            let ctx = PolicyContext::default();
            let input = Input::new(&ctx, &rules, &objects);
            [
                object_ref("cert-manager.io/v1", "ClusterIssuer", None, "evil"),
                object_ref("example.com/v1", "Unserved", None, "x"),
                object_ref("example.com/v1", "Unserved", Some("team"), "x"),
                object_ref("v1", "ConfigMap", Some("team"), "b"),
            ]
            .map(|r| input.check([&r], "p").map_err(|e| e.to_string()))
        })
        .await
        .expect("blocking task");
        let [issuer, unserved, unserved_in_team, config_map] = results;
        assert!(
            issuer
                .as_ref()
                .is_err_and(|e| e.contains("adds a cluster-scoped object")),
            "{issuer:?}"
        );
        for unknown in [&unserved, &unserved_in_team] {
            assert!(
                unknown
                    .as_ref()
                    .is_err_and(|e| e.contains("a kind the cluster does not serve")),
                "{unknown:?}"
            );
        }
        assert!(config_map.is_ok(), "{config_map:?}");
        // Each unknown kind made one more read (the refresh bound is zero here).
        assert_eq!(reads.load(Ordering::SeqCst), 4);
    }
}
