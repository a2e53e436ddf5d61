//! Unit tests of windows and the meter.
