use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the world could not start, stop, or save its history.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("cannot bind the world to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the world's server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("the world's server task died: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}
