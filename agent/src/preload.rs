//! Images a node holds before it reaches anyone (`--images DIR`, K3s' agent/images for
//! air-gapped nodes), loaded when the agent starts. A file's name is the image it is:
//! `sensor:1.wasm` is the wasm module or component `sensor:1`; `gateway:2.tar` (or `.tar.gz`)
//! the OCI image archive `gateway:2` (an OCI layout as a tar, or `docker save` output). A node
//! that has never reached its controller runs its static pods from them; afterwards a pod's
//! image comes from the controller or its registry as always, and these are what the node has
//! when neither answers.

/// What kind of image a file in the directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preloaded {
    Wasm,
    Oci,
}

/// The image reference a file in the directory stands for, and its kind; `None` for a file
/// that is not named as an image.
pub fn reference_of(file_name: &str) -> Option<(String, Preloaded)> {
    let (stem, kind) = if let Some(s) = file_name.strip_suffix(".wasm") {
        (s, Preloaded::Wasm)
    } else if let Some(s) = file_name
        .strip_suffix(".tar")
        .or_else(|| file_name.strip_suffix(".tar.gz"))
        .or_else(|| file_name.strip_suffix(".tgz"))
    {
        (s, Preloaded::Oci)
    } else {
        return None;
    };
    let valid = !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '-' | '_' | '@'));
    valid.then(|| (stem.to_string(), kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_the_image_it_holds() {
        let cases = [
            ("sensor:1.wasm", Some(("sensor:1", Preloaded::Wasm))),
            ("probe.wasm", Some(("probe", Preloaded::Wasm))),
            ("gateway:2.tar", Some(("gateway:2", Preloaded::Oci))),
            (
                "gateway_v2:2.0.1.tar.gz",
                Some(("gateway_v2:2.0.1", Preloaded::Oci)),
            ),
            ("gw.tgz", Some(("gw", Preloaded::Oci))),
            ("README.md", None),
            (".wasm", None),
            (".hidden.tar", None),
            ("with space.wasm", None),
        ];
        for (name, want) in cases {
            let got = reference_of(name);
            assert_eq!(got.as_ref().map(|(r, k)| (r.as_str(), *k)), want, "{name}");
        }
    }
}
