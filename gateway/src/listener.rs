//! One SO_REUSEPORT listening socket per worker, so the kernel spreads new connections across
//! workers without any lock or hand-off in user space.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};

/// Binds one non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Binds `count` sockets to the same address. When the port is 0, the first socket picks one
/// and the others share it.
pub(crate) fn bind_all(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> io::Result<Vec<TcpListener>> {
    let first = bind(addr, backlog)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind(actual, backlog)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_share_an_ephemeral_port() {
        let all = bind_all("127.0.0.1:0".parse().unwrap(), 3, 16).unwrap();
        let port = all[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &all {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        // a connection lands on one of them
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn a_taken_port_without_reuseport_fails_clearly() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind(plain.local_addr().unwrap(), 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
