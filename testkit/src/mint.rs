//! Tokens signed with the test secret, without an app.

use revokd::token::Minter;
use revokd_jobs::now_unix;

use crate::config::{redis_url, test_config};

/// A token for `sub` signed with the test secret.
pub fn mint(sub: &str) -> String {
    mint_issued_ago(sub, 0)
}

/// [`mint`], issued `ago` seconds ago.
pub fn mint_issued_ago(sub: &str, ago: i64) -> String {
    let config = test_config("mint:", &redis_url(), "postgres://unused/x", &[]);
    Minter::new(&config.key_settings())
        .expect("minter")
        .mint(sub, 900, true, now_unix() - ago)
        .expect("mint")
}
