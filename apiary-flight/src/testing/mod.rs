//! Test rigs (feature `testing`): a TCP proxy whose link can be cut, to partition a
//! coordinator from a worker while storage stays reachable; and a certificate authority
//! that issues certificates for TLS tests.

mod proxy;
mod tls;

pub use proxy::Proxy;
pub use tls::Authority;
