//! Helpers shared by the end-to-end suites: a served app on 127.0.0.1 next to a mock platform.
