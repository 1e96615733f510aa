//! ECDSA signature malleability: [`ecdsa_twin`] gives the other valid form of
//! an ES256/ES384 token's signature, so a token without `jti` can be revoked
//! under both of its ids (see `VerifiedToken::twin_token_id`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;

/// Order `n` of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// Order `n` of the P-384 group, big-endian.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// The compact token with its ECDSA signature `r || s` replaced by
/// `r || (n − s)`: ECDSA signatures are malleable, and this twin verifies
/// under the same key. `None` for other algorithms or a signature of the
/// wrong shape (`0 < s < n` holds for any signature that verified).
pub fn ecdsa_twin(token: &str, alg: Algorithm) -> Option<String> {
    let order: &[u8] = match alg {
        Algorithm::ES256 => &P256_ORDER,
        Algorithm::ES384 => &P384_ORDER,
        _ => return None,
    };
    let (signed, signature) = token.rsplit_once('.')?;
    let mut signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    if signature.len() != 2 * order.len() {
        return None;
    }
    let s = &mut signature[order.len()..];
    // s ← n − s, big-endian, with borrow.
    let mut borrow = 0u16;
    for (digit, &n) in s.iter_mut().rev().zip(order.iter().rev()) {
        let d = u16::from(n)
            .wrapping_sub(u16::from(*digit))
            .wrapping_sub(borrow);
        borrow = u16::from(u16::from(n) < u16::from(*digit) + borrow);
        *digit = (d & 0xff) as u8;
    }
    (borrow == 0).then(|| format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&signature)))
}
