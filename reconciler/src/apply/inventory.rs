//! Inventory arithmetic: the pending inventory (old ∪ new) and the stale set (old − new).

use std::collections::HashSet;

use super::object::ObjectRef;
use crate::api::{Inventory, InventoryEntry};

/// The inventory of exactly `objects`, in apply order.
pub fn of(objects: &[ObjectRef]) -> Inventory {
    Inventory {
        entries: objects.iter().map(ObjectRef::entry).collect(),
    }
}

/// The pending inventory recorded before the first write: every new object, then every old
/// entry not among them, so that whatever happens next no applied object is forgotten.
pub fn union(old: Option<&Inventory>, new: &[ObjectRef]) -> Inventory {
    let mut inventory = of(new);
    let ids: HashSet<String> = new.iter().map(ObjectRef::id).collect();
    if let Some(old) = old {
        inventory
            .entries
            .extend(old.entries.iter().filter(|e| !ids.contains(&e.id)).cloned());
    }
    inventory
}

/// Old entries whose objects are not in `new` (compared by id, so a version change is not a
/// removal). Entries that cannot be parsed are dropped: they cannot name an object.
pub fn stale(old: Option<&Inventory>, new: &[ObjectRef]) -> Vec<ObjectRef> {
    let ids: HashSet<String> = new.iter().map(ObjectRef::id).collect();
    old.map(|inv| inv.entries.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|e| !ids.contains(&e.id))
        .filter_map(ObjectRef::from_entry)
        .collect()
}

/// `inventory` without the entries of `removed`.
pub fn without(inventory: &Inventory, removed: &[ObjectRef]) -> Inventory {
    let ids: HashSet<String> = removed.iter().map(ObjectRef::id).collect();
    Inventory {
        entries: inventory
            .entries
            .iter()
            .filter(|e| !ids.contains(&e.id))
            .cloned()
            .collect::<Vec<InventoryEntry>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(kind: &str, name: &str) -> ObjectRef {
        ObjectRef::from_object(&json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "ns"}}))
            .unwrap()
    }

    #[test]
    fn union_and_stale() {
        let old = of(&[r("ConfigMap", "a"), r("ConfigMap", "b")]);
        let new = [r("ConfigMap", "b"), r("Service", "c")];
        let pending = union(Some(&old), &new);
        let ids: Vec<_> = pending.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["ns_b__ConfigMap", "ns_c__Service", "ns_a__ConfigMap"]);
        assert_eq!(stale(Some(&old), &new), vec![r("ConfigMap", "a")]);
        assert!(stale(None, &new).is_empty());
        let after = without(&pending, &[r("ConfigMap", "a")]);
        assert_eq!(after, of(&new));
    }
}
