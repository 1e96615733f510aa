//! A TCP proxy a test switches off and on, or points at another server:
//! a store that goes down and comes back, or a virtual IP that moves to a
//! promoted standby.

use crate::db::TestDb;

/// A TCP proxy to a target that the test can switch off (connections are
/// cut and refused) and on again, or retarget (connections are cut, new
/// ones go to the new target).
pub struct Proxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    enabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    target: std::sync::Arc<std::sync::RwLock<String>>,
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
        let target = std::sync::Arc::new(std::sync::RwLock::new(target.to_owned()));
        let (flag, cuts, current) = (enabled.clone(), cut.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let mut cut = cuts.subscribe();
                let target = current.read().unwrap().clone();
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
        Self {
            port,
            enabled,
            cut,
            target,
        }
    }

    /// Points the proxy at `target` (`host:port`): every connection is cut,
    /// new ones go there (a virtual IP moving to another server).
    pub fn retarget(&self, target: &str) {
        *self.target.write().unwrap() = target.to_owned();
        self.cut.send_modify(|n| *n += 1);
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
