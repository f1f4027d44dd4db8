//! Free loopback ports. A port is taken by binding it; the listener is
//! dropped just before the server starts, so collisions are rare, and a
//! server that still finds its port taken fails with `PortInUse`.

use std::net::{Ipv4Addr, TcpListener};

use crate::error::{Error, Result};

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::failed("picking a free port", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::failed("picking a free port", e))?
        .port())
}

/// `n` consecutive free ports (the broker derives two of its ports from its
/// main one: fast port = main - 2, HA port = main + 1).
pub fn free_port_block(n: u16) -> Result<u16> {
    for _ in 0..64 {
        let base = free_port()?;
        if base > u16::MAX - n {
            continue;
        }
        if (base..base + n).all(is_free) {
            return Ok(base);
        }
    }
    Err(Error::failed(
        "picking free ports",
        format!("found no {n} consecutive free ports on 127.0.0.1"),
    ))
}

pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// `Ok` when `port` is free, else `PortInUse` naming `what` wanted it.
pub fn ensure_free(port: u16, what: &str) -> Result<()> {
    if is_free(port) {
        Ok(())
    } else {
        Err(Error::PortInUse {
            port,
            what: what.to_string(),
        })
    }
}
