//! frame (to be written).
