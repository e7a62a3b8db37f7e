//! Typed errors of the build stage. Every variant names the file (a path relative to the build
//! root, `/` separated) and, where the cause is inside a YAML document, the line.

/// Why a build failed. Maps to the Kustomization condition reason `BuildFailed`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file or directory could not be read.
    #[error("{file}: {message}")]
    Io {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The caller's input filter refused a file (e.g. it cannot be decrypted).
    #[error("{file}: {message}")]
    Input {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A path in a kustomization points outside the build root (`..` past the root, absolute).
    #[error("{file}: path '{path}' escapes the source root")]
    EscapesRoot {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The path as the kustomization writes it.
        path: String,
    },
    /// A path goes through a symbolic link; builds never follow symlinks.
    #[error("{file}: '{path}' is a symbolic link; symlinks are not followed")]
    Symlink {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The path as the kustomization writes it.
        path: String,
    },
    /// A referenced path does not exist.
    #[error("{file}: '{path}' does not exist")]
    NotFound {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The path as the kustomization writes it.
        path: String,
    },
    /// A YAML document could not be parsed.
    #[error("{file}{}: invalid YAML: {message}", line.map(|l| format!(":{l}")).unwrap_or_else(|| " (line unknown: the YAML parser did not report one)".to_string()))]
    Yaml {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The line in the file, from 1, when the parser reported one.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A file is not valid UTF-8 text.
    #[error("{file}:{line}: not valid UTF-8 text")]
    NotUtf8 {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The line of the first invalid byte, from 1.
        line: usize,
    },
    /// An input exceeds a size bound (file size, document count, total bytes, depth).
    #[error("{file}: {what} exceeds the limit of {limit}")]
    TooLarge {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// What went over the bound.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// Kustomizations include each other in a cycle.
    #[error("{file}: kustomization cycle: {chain}")]
    Cycle {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The kustomizations of the cycle, in the order they include each other.
        chain: String,
    },
    /// A feature this engine refuses (remote bases, helm charts, KRM functions, ...).
    #[error("{file}: {feature} is not supported: {detail}")]
    Unsupported {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The field or feature refused.
        feature: &'static str,
        /// Why, and what to use instead.
        detail: String,
    },
    /// The kustomization file itself is invalid (unknown field, wrong type, wrong kind).
    #[error("{file}: invalid kustomization: {message}")]
    InvalidKustomization {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The kustomization file sets nothing (kustomize refuses it too; building it as nothing
    /// would let prune delete everything the Kustomization applied).
    #[error(
        "{file}: kustomization file is empty: it sets no resources, generators or transformers"
    )]
    EmptyKustomization {
        /// The file, relative to the build root (`/` separated).
        file: String,
    },
    /// A document is not a Kubernetes object (no kind, not a mapping, ...).
    #[error("{file}: {message}")]
    InvalidObject {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Two objects have the same group/kind/namespace/name.
    #[error("{file}: duplicate object {id}: may not add an object whose id is already registered")]
    DuplicateId {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The duplicated object's id.
        id: String,
    },
    /// A patch could not be applied.
    #[error("{file}: patch: {message}")]
    Patch {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A configMapGenerator or secretGenerator entry is invalid.
    #[error("{file}: generator '{name}': {message}")]
    Generator {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// The generator's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A transformer (images, replicas, replacements, labels, name references) failed.
    #[error("{file}: {message}")]
    Transform {
        /// The file, relative to the build root (`/` separated).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// postBuild variable substitution failed for an object.
    #[error("postBuild substitution in {object}: {message}")]
    Substitution {
        /// The object being substituted, `Kind namespace/name`.
        object: String,
        /// What is wrong.
        message: String,
    },
}

impl BuildError {
    /// The file the error is about (relative to the build root), if it is about one.
    pub fn file(&self) -> Option<&str> {
        match self {
            BuildError::Io { file, .. }
            | BuildError::Input { file, .. }
            | BuildError::EscapesRoot { file, .. }
            | BuildError::Symlink { file, .. }
            | BuildError::NotFound { file, .. }
            | BuildError::Yaml { file, .. }
            | BuildError::NotUtf8 { file, .. }
            | BuildError::TooLarge { file, .. }
            | BuildError::Cycle { file, .. }
            | BuildError::Unsupported { file, .. }
            | BuildError::InvalidKustomization { file, .. }
            | BuildError::EmptyKustomization { file }
            | BuildError::InvalidObject { file, .. }
            | BuildError::DuplicateId { file, .. }
            | BuildError::Patch { file, .. }
            | BuildError::Generator { file, .. }
            | BuildError::Transform { file, .. } => Some(file),
            BuildError::Substitution { .. } => None,
        }
    }
}
