//! What a user and a registry write that the client reads: image references, with Docker's
//! defaults, and `WWW-Authenticate` challenges. Pure parsing, tested with tables.

/// An image reference: `[registry/]repository[:tag][@digest]`, with Docker's defaults
/// (`docker.io`, `library/` for a one-part name, tag `latest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl std::str::FromStr for Reference {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Reference, String> {
        let (name, digest) = match s.rsplit_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            let ok = d.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            });
            if !ok {
                return Err(format!("digest {d:?} is not sha256: and 64 hex digits"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if name.contains('/') => ("docker.io".to_string(), name.to_string()),
            _ => ("docker.io".to_string(), format!("library/{name}")),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path, None),
        };
        let component = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if repository.len() > 255 || !repository.split('/').all(component) {
            return Err(format!(
                "repository {repository:?} must be lowercase letters, digits and . _ - / \
                 (each part starting with a letter or digit)"
            ));
        }
        if let Some(t) = &tag {
            let ok = t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(format!("tag {t:?} is not a valid tag"));
            }
        }
        if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(format!("registry {registry:?} is not a host name"));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }
}

impl Reference {
    /// The reference for the same repository at `digest`.
    pub fn at(&self, digest: &str) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The registry as written (`docker.io` when none was).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What a manifest is asked for by: the digest, else the tag, else `latest`.
    pub(super) fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host the API is served from (Docker Hub's is not its name).
    pub(super) fn api_host(&self) -> &str {
        match self.registry.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            r => r,
        }
    }
}

/// A `WWW-Authenticate` challenge: its scheme and parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses `Bearer realm="https://auth",service="reg",scope="repository:x:pull"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if rest.is_empty() {
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let mut value = String::new();
                    let mut chars = quoted.char_indices();
                    let mut end = None;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => value.extend(chars.next().map(|(_, c)| c)),
                            '"' => {
                                end = Some(i + 1);
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    (value, &quoted[end?..])
                }
                None => {
                    let end = after.find(',').unwrap_or(after.len());
                    (after[..end].trim().to_string(), &after[end..])
                }
            };
            params.push((key.trim().to_ascii_lowercase(), value));
            rest = after;
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    pub(super) fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_take_dockers_defaults() {
        for (written, registry, repository, tag, digest, api) in [
            (
                "busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
                "registry-1.docker.io",
            ),
            (
                "team/app:1.2",
                "docker.io",
                "team/app",
                Some("1.2"),
                None,
                "registry-1.docker.io",
            ),
            (
                "ghcr.io/team/app:v1",
                "ghcr.io",
                "team/app",
                Some("v1"),
                None,
                "ghcr.io",
            ),
            (
                "127.0.0.1:5000/hello",
                "127.0.0.1:5000",
                "hello",
                None,
                None,
                "127.0.0.1:5000",
            ),
            (
                "localhost/a/b/c:t",
                "localhost",
                "a/b/c",
                Some("t"),
                None,
                "localhost",
            ),
        ] {
            let r: Reference = written.parse().unwrap();
            assert_eq!(
                (
                    r.registry(),
                    r.repository(),
                    r.tag.as_deref(),
                    r.digest(),
                    r.api_host()
                ),
                (registry, repository, tag, digest, api),
                "{written}"
            );
        }
        let d = format!("sha256:{}", "ab".repeat(32));
        let r: Reference = format!("reg:5000/app:1@{d}").parse().unwrap();
        assert_eq!((r.repository(), r.manifest_ref()), ("app", d.as_str()));
        let r: Reference = "reg:5000/app".parse().unwrap();
        assert_eq!(r.manifest_ref(), "latest");
        assert_eq!(r.at(&d).manifest_ref(), d);
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (written, names) in [
            ("reg.io/App:1", "repository"),
            ("reg.io/app:-x", "tag"),
            ("reg.io/app@sha256:abc", "digest"),
            ("reg.io//app", "repository"),
            ("reg.io/app@md5:00", "digest"),
        ] {
            let e = written.parse::<Reference>().unwrap_err();
            assert!(e.contains(names), "{written}: {e}");
        }
    }

    #[test]
    fn challenges_are_parsed_with_quoted_and_bare_values() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.io/token"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        let c = Challenge::parse(r#"Basic realm=registry, charset="UTF-8""#).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.param("realm")),
            ("basic", Some("registry"))
        );
        assert_eq!(c.param("charset"), Some("UTF-8"));
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
    }
}
