//! The SellerShorts wire format, exactly as documented (`docs/protocol.md` §2, §4).
//!
//! Everything the platform's docs leave open — a field name, a limit, a shape — is a constant in
//! [`platform`], so that following the platform when it is confirmed is a one-line change.

#[cfg(test)]
pub(crate) mod arbitrary;
pub(crate) mod callback;
pub(crate) mod platform;
pub(crate) mod polling;
pub(crate) mod webhook;
