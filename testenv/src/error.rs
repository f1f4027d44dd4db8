use std::path::PathBuf;

/// Everything that can go wrong while starting or driving the test
/// environment. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{tool} is not installed in {path}: run `make deps` (or testenv/bootstrap/deps.sh {step}) first"
    )]
    NotInstalled {
        tool: &'static str,
        path: PathBuf,
        step: &'static str,
    },

    #[error("`{program}` is not on PATH: {hint}")]
    MissingProgram {
        program: &'static str,
        hint: &'static str,
    },

    #[error(
        "port {port} on 127.0.0.1 wanted for the {what} is already in use: stop whatever listens there (`ss -ltnp 'sport = :{port}'`) or let the environment pick free ports"
    )]
    PortInUse { port: u16, what: String },

    #[error("could not start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} exited before it was ready ({status}); last lines of {log}:\n{tail}")]
    Exited {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{what} was not ready after {secs}s ({detail}); last lines of {log}:\n{tail}")]
    NotReady {
        what: String,
        secs: u64,
        detail: String,
        log: PathBuf,
        tail: String,
    },

    #[error("a real Kubernetes node cannot run on this machine: {reason}")]
    NodeUnsupported { reason: String },

    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },

    #[error("RocketMQ client: {0}")]
    Client(#[from] dojo_kit::KitError),

    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn failed(what: impl Into<String>, detail: impl std::fmt::Display) -> Error {
        Error::Failed {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}
