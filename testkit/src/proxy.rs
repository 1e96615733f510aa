//! A TCP proxy a test switches off and on: a store that goes down and
//! comes back.

use crate::db::TestDb;

/// A TCP proxy to a target that the test can switch off (connections are
/// cut and refused) and on again: a store that goes down and comes back.
pub struct Proxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    enabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    /// A proxy to `target` (`host:port`), enabled.
    pub async fn start(target: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let enabled = std::sync::Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (flag, cuts, target) = (enabled.clone(), cut.clone(), target.to_owned());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let mut cut = cuts.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { port, enabled, cut }
    }

    /// Off: cuts every connection and refuses new ones. On: forwards again.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, std::sync::atomic::Ordering::SeqCst);
        if !on {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

/// Postgres reached through `proxy`.
pub fn proxied(db: &TestDb, proxy: &Proxy) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name)
}
