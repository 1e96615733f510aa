//! The load balancer service of `deploy/compose.yaml` (HAProxy), read and
//! checked against the API services.

use std::collections::BTreeSet;

use super::{compose::Compose, services::RevokdService};

/// The load balancer (HAProxy): its configuration, mounted from deploy/.
pub struct Balancer {
    /// The configuration's lines.
    pub config: Vec<String>,
    /// The port it binds (`bind :PORT`).
    pub inside: u16,
}

/// The HAProxy service, checked: it balances exactly the API services at
/// their listen ports, checks their `/readyz`, and waits for them healthy.
pub fn balancer(compose: &Compose, apis: &[&RevokdService<'_>]) -> Balancer {
    let mut found = compose
        .services
        .iter()
        .filter(|(_, s)| s.image.as_deref().is_some_and(|i| i.starts_with("haproxy")));
    let (name, service) = found.next().expect("a load balancer (haproxy)");
    let path = service
        .mounted_at("/usr/local/etc/haproxy/haproxy.cfg")
        .unwrap_or_else(|| panic!("{name}: no haproxy.cfg mounted"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let config: Vec<String> = text.lines().map(String::from).collect();
    let words = |key: &str| -> Vec<Vec<&str>> {
        let lines = config
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        lines.filter(|w| w.first() == Some(&key)).collect()
    };
    let servers: BTreeSet<&str> = words("server").iter().map(|w| w[2]).collect();
    let wanted: Vec<String> = apis
        .iter()
        .map(|a| format!("{}:{}", a.name, a.listen))
        .collect();
    assert_eq!(
        servers,
        wanted.iter().map(String::as_str).collect(),
        "{name}'s servers"
    );
    assert!(
        text.contains("option httpchk GET /readyz"),
        "{name} checks /readyz"
    );
    for api in apis {
        let on = service
            .depends_on
            .get(api.name)
            .map(|d| d.condition.as_str());
        assert_eq!(on, Some("service_healthy"), "{name} waits for {}", api.name);
    }
    let bind = words("bind");
    let inside = bind[0][1]
        .trim_start_matches(':')
        .parse()
        .expect("bind :PORT");
    Balancer { config, inside }
}
