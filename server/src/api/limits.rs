//! Message-size refusals with the code `features/limits.feature` expects: tonic
//! answers a request over its decoding limit with `OutOfRange`; clients of
//! Regatta expect `ResourceExhausted`.

/// Rewrites tonic's "message too large" `OutOfRange` into `ResourceExhausted`.
pub fn resource_exhausted_for_oversized<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let oversized = headers
        .get("grpc-status")
        .is_some_and(|status| status == "11")
        && headers
            .get("grpc-message")
            .and_then(|message| message.to_str().ok())
            .is_some_and(|message| {
                message.contains("message%20length%20too%20large")
                    || message.contains("message length too large")
            });
    if oversized {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_oversized_out_of_range_becomes_resource_exhausted() {
        let response = |status: &'static str, message: &'static str| {
            http::Response::builder()
                .header("grpc-status", status)
                .header("grpc-message", message)
                .body(())
                .expect("response")
        };
        let fixed = resource_exhausted_for_oversized(response(
            "11",
            "Error, decoded message length too large: found 5 bytes",
        ));
        assert_eq!(fixed.headers()["grpc-status"], "8");
        let untouched = resource_exhausted_for_oversized(response("11", "something else"));
        assert_eq!(untouched.headers()["grpc-status"], "11");
    }
}
