//! End-to-end tests of saas-rs live under `tests/`; this library is empty.
