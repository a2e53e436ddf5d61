//! Paused-clock tests of the STT link through the in-memory connector.
