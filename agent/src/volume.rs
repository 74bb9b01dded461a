//! The files of a ConfigMap, Secret or downwardAPI volume, as the kubelet projects them: every key as a
//! file, or only the `items` asked for at the paths they name; each with its `mode` or the
//! volume's `defaultMode` (0644). A missing object or key is an error unless the volume is
//! `optional` (then the volume is empty, or the key left out). Decided from the fetched data,
//! so it is tested with tables.

use shoal_api::KeyToPath;
use std::collections::BTreeMap;

/// Kubernetes' default mode of projected files.
pub const DEFAULT_MODE: u32 = 0o644;

#[derive(Debug, PartialEq)]
pub struct File {
    /// Relative to the volume, checked: no absolute path, no `..`.
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// The files of a volume from `data` (`None`: the object does not exist).
pub fn files(
    what: &str,
    name: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: &[KeyToPath],
    default_mode: Option<i32>,
    optional: Option<bool>,
) -> Result<Vec<File>, String> {
    let optional = optional == Some(true);
    let mode = |m: Option<i32>| {
        m.or(default_mode)
            .and_then(|m| u32::try_from(m).ok())
            .map_or(DEFAULT_MODE, |m| m & 0o777)
    };
    let Some(data) = data else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(format!("{what} {name:?} not found"))
        };
    };
    if items.is_empty() {
        return Ok(data
            .iter()
            .map(|(k, v)| File {
                path: k.clone(),
                bytes: v.clone(),
                mode: mode(None),
            })
            .collect());
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        shoal_api::validate::check_relative_path(&item.path)
            .map_err(|m| format!("{what} {name:?} item {:?}: path {m}", item.key))?;
        match data.get(&item.key) {
            Some(v) => out.push(File {
                path: item.path.clone(),
                bytes: v.clone(),
                mode: mode(item.mode),
            }),
            None if optional => {}
            None => return Err(format!("key {:?} not found in {what} {name:?}", item.key)),
        }
    }
    Ok(out)
}

/// The files of a downwardAPI volume: each item's field of the pod, or a container's
/// request or limit, at its path with its mode (or the volume's `defaultMode`, 0644).
pub fn downward_files(
    source: &shoal_api::DownwardApiVolumeSource,
    pod: &shoal_api::Pod,
    at: &crate::env::Placement,
) -> Result<Vec<File>, String> {
    let mut out = Vec::with_capacity(source.items.len());
    for item in &source.items {
        shoal_api::validate::check_relative_path(&item.path)
            .map_err(|m| format!("item {:?}: path {m}", item.path))?;
        let text = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => crate::env::volume_field(pod, &f.field_path)?,
            (None, Some(r)) => crate::env::resource_field(pod, None, r, at)?,
            (None, None) => {
                return Err(format!(
                    "item {:?}: no fieldRef or resourceFieldRef",
                    item.path
                ))
            }
        };
        let mode = item
            .mode
            .or(source.default_mode)
            .and_then(|m| u32::try_from(m).ok())
            .map_or(DEFAULT_MODE, |m| m & 0o777);
        out.push(File {
            path: item.path.clone(),
            bytes: text.into_bytes(),
            mode,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into()
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    fn paths(files: &[File]) -> Vec<(&str, u32)> {
        files.iter().map(|f| (f.path.as_str(), f.mode)).collect()
    }

    #[test]
    fn volumes_project_every_key_or_only_the_items_with_their_modes() {
        let d = data();
        let all = files("configmap", "c", Some(&d), &[], None, None).unwrap();
        assert_eq!(paths(&all), [("a", 0o644), ("b", 0o644)]);
        let all = files("secret", "s", Some(&d), &[], Some(0o400), None).unwrap();
        assert_eq!(paths(&all), [("a", 0o400), ("b", 0o400)]);
        let picked = [
            item("b", "conf/renamed", Some(0o600)),
            item("a", "a.txt", None),
        ];
        let some = files("configmap", "c", Some(&d), &picked, Some(0o440), None).unwrap();
        assert_eq!(paths(&some), [("conf/renamed", 0o600), ("a.txt", 0o440)]);
        assert_eq!(some[0].bytes, b"2");
    }

    #[test]
    fn missing_objects_and_keys_fail_unless_optional() {
        let d = data();
        type Case<'a> = (
            Option<&'a BTreeMap<String, Vec<u8>>>,
            Vec<KeyToPath>,
            Option<bool>,
            Result<usize, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (None, vec![], None, Err("configmap \"c\" not found")),
            (None, vec![], Some(true), Ok(0)),
            (
                Some(&d),
                vec![item("zz", "z", None)],
                None,
                Err("key \"zz\" not found"),
            ),
            (
                Some(&d),
                vec![item("zz", "z", None), item("a", "a", None)],
                Some(true),
                Ok(1),
            ),
            (
                Some(&d),
                vec![item("a", "../../etc/passwd", None)],
                None,
                Err("must not contain '..'"),
            ),
            (
                Some(&d),
                vec![item("a", "/etc/passwd", None)],
                None,
                Err("must be a relative path"),
            ),
        ];
        for (data, items, optional, want) in cases {
            let got = files("configmap", "c", data, &items, None, optional);
            match (got, want) {
                (Ok(f), Ok(n)) => assert_eq!(f.len(), n, "{items:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                (got, want) => panic!("{items:?}: {got:?}, wanted {want:?}"),
            }
        }
    }
}
