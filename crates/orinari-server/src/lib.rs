//! orinari-server
