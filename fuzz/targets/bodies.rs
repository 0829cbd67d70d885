//! The API's request bodies (`ringfence_api`) read from any bytes as the server reads them
//! (serde_json).
//!
//! Never a panic; a refusal says where (a line of the body); a body that reads is written
//! back and read again to the same value (what the CLI sends is what the server reads).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How many kinds of body `data` is.
pub fn request_bodies(data: &[u8]) -> usize {
    [
        body::<ringfence_api::ApplySpec>(data),
        body::<ringfence_api::ReleaseRequest>(data),
        body::<ringfence_api::Deploy>(data),
        body::<ringfence_api::Rollback>(data),
        body::<ringfence_api::Reason>(data),
        body::<ringfence_api::RequiredReason>(data),
        body::<ringfence_api::CreateToken>(data),
        body::<ringfence_api::Attestation>(data),
        body::<ringfence_api::AttestationHook>(data),
        body::<ringfence_api::NewFollowUp>(data),
        body::<ringfence_api::AssignFollowUp>(data),
        body::<ringfence_api::Report>(data),
    ]
    .into_iter()
    .filter(|read| *read)
    .count()
}

fn body<T: Serialize + DeserializeOwned>(data: &[u8]) -> bool {
    let name = std::any::type_name::<T>();
    match serde_json::from_slice::<T>(data) {
        Ok(value) => {
            let first = serde_json::to_value(&value).unwrap_or_else(|e| panic!("{name} read but does not write: {e}"));
            let again: T = serde_json::from_value(first.clone())
                .unwrap_or_else(|e| panic!("{name} does not read what it wrote: {e}\n{first}"));
            let second = serde_json::to_value(&again).expect("written once already");
            assert_eq!(first, second, "{name} changes through a round trip");
            true
        }
        Err(e) => {
            assert!(e.line() >= 1, "{name}: the refusal says no line: {e}");
            assert!(e.to_string().contains(" line "), "{name}: {e}");
            false
        }
    }
}
