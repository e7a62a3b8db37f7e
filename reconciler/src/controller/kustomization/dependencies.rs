//! `spec.dependsOn`: every dependency Ready at its source's current revision before the
//! pipeline goes on, cycles refused as soon as the informer cache shows them, and dependents
//! triggered when a dependency's readiness changes.

use std::collections::{HashMap, HashSet};

use kube::runtime::reflector::{ObjectRef as StoreRef, Store};

use super::status::{Run, StageError};
use crate::api::Kustomization;
use crate::api::conditions::{self, reasons};

impl Run<'_> {
    /// Stage 2: every dependency Ready at its source's current revision; cycles refused.
    pub(super) async fn dependencies(&self) -> Result<(), StageError> {
        if self.ks.spec.depends_on.is_empty() {
            return Ok(());
        }
        for dep in &self.ks.spec.depends_on {
            let (ns, other): (String, Kustomization) = self
                .referenced(
                    "spec.dependsOn",
                    &dep.name,
                    dep.namespace.as_deref(),
                    reasons::DEPENDENCY_NOT_READY,
                    StageError::DependencyNotReady,
                )
                .await?;
            let status = other.status.clone().unwrap_or_default();
            let ready = conditions::is_ready(&status.conditions)
                && status.observed_generation == other.metadata.generation;
            if !ready {
                return Err(StageError::DependencyNotReady(format!(
                    "dependency {ns}/{} is not ready",
                    dep.name
                )));
            }
            // Ready at the current revision of its own source.
            let current = self.current_revision(&other, &ns).await;
            if current.is_some() && current != status.last_applied_revision {
                return Err(StageError::DependencyNotReady(format!(
                    "dependency {ns}/{} is not ready at revision {}",
                    dep.name,
                    current.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

/// A dependency cycle through `namespace/name`, as `a -> b -> a`, from the informer cache.
pub(super) fn find_cycle(
    store: &Store<Kustomization>,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let graph: HashMap<(String, String), Vec<(String, String)>> = store
        .state()
        .iter()
        .filter_map(|ks| {
            let ns = ks.metadata.namespace.clone()?;
            let deps = ks
                .spec
                .depends_on
                .iter()
                .map(|d| (d.namespace.clone().unwrap_or(ns.clone()), d.name.clone()))
                .collect();
            Some(((ns, ks.metadata.name.clone()?), deps))
        })
        .collect();
    let start = (namespace.to_owned(), name.to_owned());
    let mut path = vec![start.clone()];
    fn dfs(
        graph: &HashMap<(String, String), Vec<(String, String)>>,
        start: &(String, String),
        path: &mut Vec<(String, String)>,
        visited: &mut HashSet<(String, String)>,
    ) -> bool {
        let Some(current) = path.last().cloned() else {
            return false;
        };
        for next in graph.get(&current).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if visited.insert(next.clone()) {
                path.push(next.clone());
                if dfs(graph, start, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut visited = HashSet::new();
    dfs(&graph, &start, &mut path, &mut visited).then(|| {
        path.iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect::<Vec<_>>()
            .join(" -> ")
    })
}

/// Hash of what dependents care about: Ready status and the last applied revision.
pub(super) fn readiness_of(ks: &Kustomization) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let status = ks.status.as_ref()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    conditions::is_ready(&status.conditions).hash(&mut hasher);
    status.last_applied_revision.hash(&mut hasher);
    Some(hasher.finish())
}

/// The Kustomizations in `store` that depend on `dep`.
pub(super) fn dependents_of(
    store: &Store<Kustomization>,
    dep: &Kustomization,
) -> Vec<StoreRef<Kustomization>> {
    super::referring(store, &dep.metadata, |ks| {
        ks.spec
            .depends_on
            .iter()
            .map(|d| (d.namespace.as_deref(), d.name.as_str()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher;

    use super::*;

    fn ks(namespace: &str, name: &str, depends_on: &str) -> Kustomization {
        crate::yaml::from_str(&format!(
            "apiVersion: kubectl-gitops.io/v1alpha1\nkind: Kustomization\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  sourceRef: {{kind: GitRepository, name: repo}}\n  interval: 1m\n  dependsOn: {depends_on}\n"
        ))
        .unwrap()
    }

    fn store(objects: Vec<Kustomization>) -> Store<Kustomization> {
        let (reader, mut writer) = kube::runtime::reflector::store();
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        reader
    }

    #[test]
    fn a_cycle_is_named_from_the_object_and_a_chain_is_not_one() {
        let store = store(vec![
            ks("n", "a", "[{name: b}]"),
            ks("n", "b", "[{name: c, namespace: m}]"),
            ks("m", "c", "[{name: a, namespace: n}]"),
            ks("n", "d", "[{name: a}]"),
        ]);
        assert_eq!(
            find_cycle(&store, "n", "a").as_deref(),
            Some("n/a -> n/b -> m/c -> n/a")
        );
        assert_eq!(find_cycle(&store, "n", "d"), None);
    }

    #[test]
    fn dependents_are_found_across_namespaces_with_the_own_namespace_as_default() {
        let store = store(vec![
            ks("n", "app", "[{name: infra}]"),
            ks("m", "other", "[{name: infra, namespace: n}]"),
            ks("m", "local", "[{name: infra}]"),
        ]);
        let mut names: Vec<String> = dependents_of(&store, &ks("n", "infra", "[]"))
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        assert_eq!(names, ["m/other", "n/app"]);
    }
}
