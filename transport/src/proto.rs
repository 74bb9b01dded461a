//! The requests and responses of Shoal's API, as they travel in frames. Objects ride inside as
//! JSON bytes (self-describing, so object fields can grow without a protocol version bump).

use serde::{Deserialize, Serialize};

/// From when a log is shown: a time as the node's clock goes (an edge device's clock may be
/// far from the controller's), or a time given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Since {
    /// This many seconds before now, on the node.
    SecondsAgo(u64),
    /// RFC 3339.
    Time(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Create or update each object, like `kubectl apply`.
    Apply {
        objects: Vec<Vec<u8>>,
    },
    /// Creates one object (the Kubernetes API's POST): refused if it exists. A name left
    /// empty with `metadata.generateName` set is completed with a random suffix.
    Create {
        object: Vec<u8>,
        options: WriteOptions,
    },
    /// Replaces one object (PUT): refused if it does not exist, and with a conflict if the
    /// object names a `resourceVersion` that is no longer the stored one.
    Update {
        object: Vec<u8>,
        options: WriteOptions,
    },
    /// Patches one object as stored (JSON merge, JSON or strategic merge patch), then
    /// replaces it as [`Request::Update`] does; retried on a concurrent write unless the
    /// patch itself names a `resourceVersion`.
    Patch {
        kind: String,
        namespace: Option<String>,
        name: String,
        patch_type: shoal_api::patch::PatchType,
        patch: Vec<u8>,
        options: WriteOptions,
    },
    Get {
        kind: String,
        namespace: Option<String>,
        name: String,
    },
    /// `namespace: None` lists across all namespaces.
    /// `fields` is a field selector (`spec.nodeName=NAME`, `status.phase!=Running`), or empty.
    List {
        kind: String,
        namespace: Option<String>,
        selector: String,
        fields: String,
    },
    /// Every change after `revision`, as a stream of [`Response::Event`].
    Watch {
        kind: String,
        namespace: Option<String>,
        selector: String,
        fields: String,
        revision: u64,
    },
    Delete {
        kind: String,
        namespace: Option<String>,
        name: String,
        propagation: shoal_api::PropagationPolicy,
        /// A pod's grace period for this deletion (0 or more), instead of its spec's.
        grace_period: Option<i64>,
    },
    DeleteSelected {
        kind: String,
        namespace: Option<String>,
        selector: String,
        propagation: shoal_api::PropagationPolicy,
        grace_period: Option<i64>,
    },
    /// A new join token for agents: valid for `ttl_secs` (none: until deleted) and for
    /// `usages` joins (none: any number).
    CreateToken {
        description: String,
        ttl_secs: Option<u64>,
        usages: Option<u32>,
    },
    /// The join tokens, without their secrets, as a JSON list in [`Response::Json`].
    ListTokens,
    /// Deletes the join token whose id (the part before the secret's rest) is given.
    DeleteToken {
        id: String,
    },
    /// A node renews its client certificate for the key it already holds (the key bound to
    /// its name); answered with [`Response::Joined`].
    Renew {
        csr_pem: String,
    },
    /// An admin credential named `name` for the key of `csr_pem`, valid for `ttl_secs`;
    /// answered with [`Response::Joined`]. Issuing a name again replaces its key (rotation):
    /// the old certificate stops working at once.
    IssueCredential {
        name: String,
        ttl_secs: u64,
        csr_pem: String,
    },
    /// The admin credentials, as a JSON list in [`Response::Json`].
    ListCredentials,
    /// Revokes an admin credential at once.
    DeleteCredential {
        name: String,
    },
    /// Who the server takes this connection for.
    WhoAmI,
    /// A new node asks for its certificate: the token's secret, its name, and a certificate
    /// signing request for a key that never leaves the node.
    Join {
        secret: String,
        node_name: String,
        csr_pem: String,
    },
    /// A node creates or refreshes its own Node object (labels, status; the spec is the admins').
    /// Answered with the Node as stored ([`Response::Object`]): what the cluster decided for the
    /// node, such as its pod range.
    PutNode {
        object: Vec<u8>,
    },
    /// A node reports the status of a pod bound to it.
    UpdateStatus {
        object: Vec<u8>,
    },
    /// Stores an artifact under `name:tag`; `size` bytes follow as [`Response::Chunk`]-shaped
    /// [`Request::Chunk`] frames on the same stream.
    Push {
        reference: String,
        size: u64,
        digest: String,
        /// For a container image, the platforms it has (`linux/amd64`, `linux/arm/v7`), so
        /// the scheduler keeps its pods off nodes it cannot run on; empty for anything else.
        platforms: Vec<String>,
    },
    Chunk(Vec<u8>),
    /// Fetches an artifact by `name:tag` or `sha256:...`, from byte `offset` on.
    Fetch {
        reference: String,
        offset: u64,
    },
    /// A node records an Event about one of its pods: `about` is the JSON of an
    /// ObjectReference.
    RecordEvent {
        about: Vec<u8>,
        type_: String,
        reason: String,
        message: String,
    },
    /// Which of these blobs (`sha256:...`) the controller does not hold, as a JSON list in
    /// [`Response::Json`]: `shoal push` sends an image's blobs only when they are missing.
    Missing {
        digests: Vec<String>,
    },
    /// The container images a node holds, relayed to it; answered with [`Response::Json`].
    Images {
        node: String,
    },
    /// A container's log, relayed from the pod's node.
    Logs {
        namespace: String,
        pod: String,
        container: Option<String>,
        follow: bool,
        previous: bool,
        tail: Option<u64>,
        /// Each line after the time it was written.
        timestamps: bool,
        /// Only the lines written from a time on.
        since: Option<Since>,
    },
    /// Fetches the code the controller precompiled for `target` from the wasm artifact
    /// `reference` (`sha256:...` or `name:tag`), compiling it first if need be; answered as
    /// [`Request::Fetch`], from byte `offset` on.
    FetchPrecompiled {
        reference: String,
        target: shoal_api::WasmTarget,
        offset: u64,
    },
    /// A node's service proxy reaches an endpoint on another node through the controller:
    /// the controller asks `node` to [`Request::Dial`] and answers as it does; after
    /// [`Response::Ok`] the stream carries the connection's bytes, both ways, unframed.
    /// With `udp`, each datagram travels as a 2-byte big-endian length and its bytes.
    /// `from` is the client's address as the proxy saw it, so the far node holds the
    /// connection to the pod's NetworkPolicy ingress; the controller checks that a node
    /// speaks only for its own pods.
    Tunnel {
        node: String,
        ip: String,
        port: u16,
        udp: bool,
        from: String,
    },
    /// A node asks for the certificate it serves its peers with (the direct path between
    /// service proxies), for a key that never leaves it; answered with [`Response::Joined`].
    PeerCert {
        csr_pem: String,
    },
    /// Runs `command` in a container of a pod (`kubectl exec`). The controller finds the pod's
    /// node and asks it the same; after [`Response::Ok`] the stream carries [`ExecFrame`]s
    /// both ways until the node's [`ExecFrame::Exit`].
    Exec {
        namespace: String,
        pod: String,
        container: Option<String>,
        command: Vec<String>,
        stdin: bool,
        tty: bool,
    },
    /// The controller asks a node to open a TCP connection (or a UDP flow) to one of its pods (`ip` is
    /// the pod's address); answered with [`Response::Ok`] and then the bytes, as for
    /// [`Request::Tunnel`].
    /// `from`: the client a service tunnel carries (held to the pod's NetworkPolicy
    /// ingress); `None` only for an admin's port-forward, which the controller alone sends.
    Dial {
        ip: String,
        port: u16,
        udp: bool,
        from: Option<String>,
    },
    /// An admin's TCP connection to `port` of a pod (`kubectl port-forward`): the door relays
    /// it as a [`Request::Dial`] to the pod's node, answered as that is. Without a port it
    /// asks only whether the pod may be forwarded to (kubectl learns its ports later):
    /// answered with [`Response::Ok`].
    PortForward {
        namespace: String,
        pod: String,
        port: Option<u16>,
    },
    /// A node asks for the CronJobs pinned to it, with their times ahead
    /// (`shoal_api::PinnedCronJob`), to run them while cut off from the controller; answered
    /// with their JSON list in [`Response::Json`].
    PinnedCronJobs,
    /// A node reports a run of a CronJob pinned to it that it started while cut off from the
    /// controller (`shoal_api::CronRunReport`, as JSON): the controller makes its Job and pod,
    /// or gives the pod to the Job made for that time meanwhile. Answered with the pod as
    /// stored ([`Response::Object`]).
    ReportCronRun {
        report: Vec<u8>,
    },
    /// A node that cannot compile wasm (the agent-only build) has the controller compile a
    /// module it pulled from a registry itself: `size` bytes whose sha256 is `digest` follow
    /// as [`Request::Chunk`] frames, and the answer is the code for `target` (its own), as
    /// [`Request::Fetch`] answers. The controller keeps neither the module nor the code: a
    /// module pulled with a pod's credentials is never served to another node.
    Compile {
        digest: String,
        size: u64,
        target: shoal_api::WasmTarget,
    },
}

/// What travels on an [`Request::Exec`] stream once the command started: input and terminal
/// sizes towards the node, output and the exit towards the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecFrame {
    Stdin(Vec<u8>),
    /// The caller's input ended.
    StdinClosed,
    /// The caller's terminal changed size (columns, rows).
    Resize {
        width: u16,
        height: u16,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended with this code (128 + the signal when one ended it).
    Exit(i32),
}

impl ExecFrame {
    /// The most one frame carries: output and input travel in pieces this size.
    pub const MAX_DATA: usize = 32 << 10;
    /// The largest encoded frame a reader takes.
    pub const MAX_FRAME: usize = Self::MAX_DATA + 64;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyResult {
    Created,
    Configured,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// `deployment.apps/web`
    pub reference: String,
    pub namespace: Option<String>,
    pub result: ApplyResult,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Applied(Vec<ApplyOutcome>),
    Object(Vec<u8>),
    List {
        items: Vec<Vec<u8>>,
        revision: u64,
    },
    /// The first items of a list too large for one frame; more parts follow, and the
    /// [`Response::List`] that ends them carries the rest. [`crate::Client::call`] puts them
    /// together, so callers only ever see the whole list.
    ListPart(Vec<Vec<u8>>),
    Event {
        type_: EventType,
        revision: u64,
        object: Vec<u8>,
    },
    Deleted(Vec<String>),
    Token(String),
    Identity(String),
    /// A certificate signed for the caller: `ca_pem` is the CA the controller's certificate
    /// chains to, `peer_ca_pem` the one nodes' serving certificates chain to.
    Joined {
        cert_pem: String,
        ca_pem: String,
        peer_ca_pem: String,
    },
    Ok,
    /// What a fetch will send: the artifact's digest and full size, then chunks from the offset.
    Artifact {
        digest: String,
        size: u64,
    },
    Chunk(Vec<u8>),
    /// A JSON document, for answers that are not API objects (a node's images).
    Json(Vec<u8>),
    /// The object as a create or update stored it (or would have, for a dry run), with the
    /// warnings about what was sent (fields Shoal does not support).
    Written {
        object: Vec<u8>,
        created: bool,
        warnings: Vec<String>,
    },
    Error(WireError),
}

/// A join token as `shoal token list` shows it ([`Request::ListTokens`]): never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub description: String,
    /// RFC 3339; none: until deleted.
    pub expires: Option<String>,
    /// Joins allowed; none: any number.
    pub usages: Option<u32>,
    pub used: u32,
}

/// An admin credential as `shoal credentials list` shows it ([`Request::ListCredentials`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    pub name: String,
    pub expires: String,
}

/// A certificate the controller signed, and the CAs beside it ([`Response::Joined`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub cert_pem: String,
    pub ca_pem: String,
    pub peer_ca_pem: String,
}

impl Response {
    /// The certificate of a [`Response::Joined`]; anything else as the message to show.
    /// The variant's name, for messages: an answer's payload (a whole list, a chunk of a
    /// file) is never worth printing.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Response::Applied(_) => "Applied",
            Response::Object(_) => "Object",
            Response::List { .. } => "List",
            Response::ListPart(_) => "ListPart",
            Response::Event { .. } => "Event",
            Response::Deleted(_) => "Deleted",
            Response::Token(_) => "Token",
            Response::Identity(_) => "Identity",
            Response::Joined { .. } => "Joined",
            Response::Ok => "Ok",
            Response::Artifact { .. } => "Artifact",
            Response::Chunk(_) => "Chunk",
            Response::Json(_) => "Json",
            Response::Written { .. } => "Written",
            Response::Error(_) => "Error",
        }
    }

    /// What to say of an answer the caller did not expect: its kind, or the error it is.
    pub fn unexpected(&self) -> String {
        match self {
            Response::Error(e) => e.message.clone(),
            other => format!(
                "unexpected answer {} (is the other side another version?)",
                other.kind_name()
            ),
        }
    }

    pub fn into_signed(self) -> std::result::Result<Signed, String> {
        match self {
            Response::Joined {
                cert_pem,
                ca_pem,
                peer_ca_pem,
            } => Ok(Signed {
                cert_pem,
                ca_pem,
                peer_ca_pem,
            }),
            Response::Error(e) => Err(e.message),
            other => Err(other.unexpected()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    Compacted,
    Unauthenticated,
    Forbidden,
    BadRequest,
    Internal,
    /// The caller asked more often than it may; it may try again later.
    TooManyRequests,
    /// A body in an encoding the server does not read (the HTTPS door's protobuf).
    UnsupportedMediaType,
}

/// How a create or update treats what it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    /// Check and answer as if written, write nothing (`dryRun=All`).
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// Write only the object's status (the `status` subresource), leaving the rest as stored.
    pub status: bool,
    /// Who writes: the fields the write sets become theirs (managed fields). Required by a
    /// server-side apply.
    pub field_manager: Option<String>,
    /// A server-side apply takes over fields other managers set, instead of a conflict.
    pub force: bool,
}

/// What to do with fields Shoal does not support (Kubernetes' `fieldValidation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Write the object, and warn about each.
    #[default]
    Warn,
    /// Refuse the object, naming them.
    Strict,
}

/// An error as the client sees it: a code to act on and a message that says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    /// For an invalid object: each field at fault and what is wrong with it.
    pub causes: Vec<Cause>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// `spec.replicas`
    pub field: String,
    pub message: String,
}

impl ErrorCode {
    /// The reason Kubernetes gives this kind of failure (`NotFound`, `Invalid`), as kubectl
    /// prints it: `Error from server (NotFound): ...`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NotFound",
            ErrorCode::AlreadyExists => "AlreadyExists",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::Invalid => "Invalid",
            ErrorCode::Compacted => "Expired",
            ErrorCode::Unauthenticated => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::Internal => "InternalError",
            ErrorCode::TooManyRequests => "TooManyRequests",
            ErrorCode::UnsupportedMediaType => "UnsupportedMediaType",
        }
    }
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
            causes: Vec::new(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
