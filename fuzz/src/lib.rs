//! What the fuzz targets share: independent references to check the gateway against, and the
//! small line format of the `policy` target's inputs.
pub mod jsonrpc;
pub mod lines;
pub mod reference;
