//! The environment contract between the platform and a workload.

/// What the platform tells a workload, read from environment variables.
#[derive(Clone, Debug)]
pub struct Env {
    /// `NAMESRV_ADDR`: the RocketMQ name server(s), `host:port[;host:port]`.
    pub namesrv_addr: String,
    /// `WORLD_URL`: base URL of the world (ledger, inventory, ...).
    pub world_url: String,
    /// `DOJO_LEVEL`.
    pub level: u8,
    /// `DOJO_INSTANCE`: this instance's name, unique within the run.
    pub instance: String,
    /// `DOJO_LISTEN_ADDR`: where to serve HTTP, for levels whose workload is
    /// an HTTP service (the platform picks it: a free loopback port locally,
    /// the container port in a cluster).
    pub listen_addr: Option<String>,
}

impl Env {
    /// Reads the contract; the error names the missing variable.
    pub fn from_env() -> Result<Env, String> {
        let get = |k: &str| {
            std::env::var(k).map_err(|_| {
                format!("{k} is not set: run the workload through `dojo play`, which sets it")
            })
        };
        Ok(Env {
            namesrv_addr: get("NAMESRV_ADDR")?,
            world_url: get("WORLD_URL")?,
            level: get("DOJO_LEVEL")?
                .parse()
                .map_err(|_| "DOJO_LEVEL must be a number".to_string())?,
            instance: get("DOJO_INSTANCE")?,
            listen_addr: std::env::var("DOJO_LISTEN_ADDR").ok(),
        })
    }
}
