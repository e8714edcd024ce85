//! orinari-config
