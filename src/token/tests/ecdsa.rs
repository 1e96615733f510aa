//! ECDSA twins: both forms of a malleable signature know each other's id.

use super::*;
use crate::token::{ecdsa_twin, token_id};

#[test]
fn an_ecdsa_token_without_jti_knows_its_twin_and_the_twin_knows_it() {
    for (alg, stem) in [(Algorithm::ES256, "ec256"), (Algorithm::ES384, "ec384")] {
        let settings = pem(&format!("{alg:?}"), stem);
        let verifier = Verifier::new(&settings).unwrap();
        let token = mint_without_jti(&settings, 600);
        let original = verifier.verify(&token, NOW).unwrap();
        let twin = ecdsa_twin(&token, alg).unwrap();
        assert_ne!(twin, token);
        // The twin verifies too: it is the same token to anyone but a
        // byte comparison, so each names the other's id.
        let verified_twin = verifier.verify(&twin, NOW).unwrap();
        assert_eq!(verified_twin.token_id, token_id(&twin, None));
        assert_eq!(
            verified_twin.twin_token_id.as_ref(),
            Some(&original.token_id)
        );
        assert_eq!(
            original.twin_token_id.as_ref(),
            Some(&verified_twin.token_id)
        );
        assert_eq!(ecdsa_twin(&twin, alg).as_deref(), Some(token.as_str()));
        // With a jti the id is the jti, the same for both forms.
        let with_jti = mint(&settings, 600);
        assert_eq!(verifier.verify(&with_jti, NOW).unwrap().twin_token_id, None);
    }
    let hmac = hmac("HS256");
    let token = mint_without_jti(&hmac, 600);
    assert_eq!(verify(&hmac, &token, NOW).unwrap().twin_token_id, None);
}
