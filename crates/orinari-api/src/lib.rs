//! orinari-api
