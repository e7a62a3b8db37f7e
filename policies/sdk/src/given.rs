//! Which objects a policy is given, and where the objects its `transform` returns go (WIT
//! `metadata.kinds`). The reconciler's host and [`crate::testing`] both follow these rules.

use crate::GroupKind;

/// True if a policy that declared `kinds` is given an object of `api_version`/`kind`:
/// every object when it declared none, otherwise one whose group and kind are listed.
pub fn is_given(kinds: Option<&[GroupKind]>, api_version: &str, kind: &str) -> bool {
    kinds.is_none_or(|kinds| kinds.iter().any(|k| k.matches(api_version, kind)))
}

/// The positions of the objects a policy that declared `kinds` is given, among objects of
/// these `(apiVersion, kind)`.
pub fn positions<'a>(
    kinds: Option<&[GroupKind]>,
    identities: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<usize> {
    identities
        .into_iter()
        .enumerate()
        .filter(|(_, (api_version, kind))| is_given(kinds, api_version, kind))
        .map(|(i, _)| i)
        .collect()
}

/// `transform` run on the objects of `all` at `given` (see [`positions`]), and what it returns
/// spliced into their places (see [`splice`]).
pub fn transform_given<T, E>(
    all: Vec<T>,
    given: &[usize],
    transform: impl FnOnce(Vec<T>) -> Result<Vec<T>, E>,
) -> Result<Vec<T>, E> {
    let mut all: Vec<Option<T>> = all.into_iter().map(Some).collect();
    let sent = given
        .iter()
        .filter_map(|&i| all.get_mut(i).and_then(Option::take))
        .collect();
    let returned = transform(sent)?;
    Ok(splice(all, given, returned.into_iter().map(Some).collect())
        .into_iter()
        .flatten()
        .collect())
}

/// The objects after a transform: `all`, where the objects at `given` (the ascending positions
/// of the objects the policy was given) are replaced, place by place, with what it `returned`;
/// the rest of `returned` goes after the last of those places (at the end when it was given
/// none), and places left over are dropped. A transform that edits objects in place keeps the
/// order of the whole list.
pub fn splice<T>(all: Vec<T>, given: &[usize], returned: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(all.len() - given.len().min(all.len()) + returned.len());
    let mut returned = returned.into_iter();
    let last = given.last().copied();
    let mut given = given.iter().copied().peekable();
    for (i, object) in all.into_iter().enumerate() {
        if given.next_if_eq(&i).is_none() {
            out.push(object);
            continue;
        }
        out.extend(returned.next());
        if Some(i) == last {
            out.extend(returned.by_ref());
        }
    }
    out.extend(returned);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_is_given_unless_kinds_are_declared() {
        assert!(is_given(None, "example.com/v1", "Anything"));
        let kinds = [
            GroupKind::new("apps", "Deployment"),
            GroupKind::new("", "Pod"),
        ];
        assert!(is_given(Some(&kinds), "apps/v1", "Deployment"));
        assert!(is_given(Some(&kinds), "v1", "Pod"));
        assert!(!is_given(Some(&kinds), "example.com/v1", "Deployment"));
        assert!(!is_given(Some(&kinds), "apps/v1", "Pod"));
        assert!(!is_given(Some(&kinds), "v1", "ConfigMap"));
        assert!(!is_given(Some(&[]), "v1", "Pod"));
    }

    #[test]
    fn a_transform_of_the_given_objects_is_spliced_back() {
        let all = vec!["a", "B", "c", "D"];
        let given = positions(
            Some(&[GroupKind::new("", "Big")]),
            all.iter().map(|o| {
                (
                    "v1",
                    if o.to_uppercase() == **o {
                        "Big"
                    } else {
                        "Small"
                    },
                )
            }),
        );
        assert_eq!(given, [1, 3]);
        let out = transform_given(all, &given, |sent| {
            assert_eq!(sent, ["B", "D"]);
            Ok::<_, ()>(vec!["X", "Y", "Z"])
        });
        assert_eq!(out, Ok(vec!["a", "X", "c", "Y", "Z"]));
    }

    #[test]
    fn returned_objects_fill_the_places_of_the_given_ones() {
        let all = vec!["a", "B", "c", "D", "e"];
        let given = [1, 3];
        assert_eq!(
            splice(all.clone(), &given, vec!["B2", "D2"]),
            ["a", "B2", "c", "D2", "e"]
        );
        assert_eq!(
            splice(all.clone(), &given, vec!["X", "Y", "Z"]),
            ["a", "X", "c", "Y", "Z", "e"]
        );
        assert_eq!(splice(all.clone(), &given, vec!["X"]), ["a", "X", "c", "e"]);
        assert_eq!(splice(all.clone(), &given, vec![]), ["a", "c", "e"]);
        assert_eq!(
            splice(all.clone(), &[], vec!["X"]),
            ["a", "B", "c", "D", "e", "X"]
        );
        assert_eq!(splice(all.clone(), &[0, 1, 2, 3, 4], vec!["X"]), ["X"]);
        assert_eq!(
            splice(all, &[4], vec!["X", "Y"]),
            ["a", "B", "c", "D", "X", "Y"]
        );
        assert_eq!(splice(Vec::<&str>::new(), &[], vec!["X"]), ["X"]);
    }
}
