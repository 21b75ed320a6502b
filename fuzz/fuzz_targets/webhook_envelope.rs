//! Any bytes as a webhook body: the parser answers, never panics, and accepts only bodies an
//! `Order` can hand back as JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match shorts_runtime::__fuzz::parse_webhook(body) {
        Ok(order_id) => {
            // `Order::payload_json` must never fail for a stored body.
            assert!(
                std::str::from_utf8(body).is_ok(),
                "accepted a body that is not UTF-8"
            );
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(body) {
                panic!("accepted a body serde_json::Value cannot hold: {e}");
            }
            assert!(!order_id.trim().is_empty() && order_id.len() <= 200);
            assert!(!order_id.chars().any(char::is_control));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
