//! Operating a running server: alerts.

pub(crate) mod alerts;
