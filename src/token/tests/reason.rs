//! [`Reason`]'s wire names.

use serde_json::json;

use super::*;

#[test]
fn reasons_serialize_as_their_snake_case_names() {
    use Reason::*;
    let all = [
        Revoked,
        SubjectRevoked,
        IssuerRevoked,
        Expired,
        NotYetValid,
        InvalidSignature,
        InvalidIssuer,
        InvalidAudience,
        Malformed,
        UnsupportedAlgorithm,
        Reused,
        Unknown,
    ];
    for reason in all {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            json!(reason.as_str())
        );
        assert_eq!(
            serde_json::from_value::<Reason>(json!(reason.to_string())).unwrap(),
            reason
        );
    }
    assert_eq!(SubjectRevoked.as_str(), "subject_revoked");
    assert_eq!(IssuerRevoked.as_str(), "issuer_revoked");
}
