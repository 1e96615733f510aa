//! Compose's network mapped onto loopback: each `service:port` a process of
//! the deployment listens on becomes the `127.0.0.1:<port>` the test gave
//! that process, in arguments, configuration files and settings alike.

/// The addresses of a deployment's processes.
#[derive(Default)]
pub struct Network {
    /// (service, port inside compose's network, local port).
    ports: Vec<(String, u16, u16)>,
}

impl Network {
    /// `service` listens on `inside` in compose, on `local` here.
    pub fn add(&mut self, service: &str, inside: u16, local: u16) {
        self.ports.push((service.to_owned(), inside, local));
    }

    /// The local port of `service:inside`; panics when it was not added.
    pub fn local(&self, service: &str, inside: u16) -> u16 {
        self.ports
            .iter()
            .find(|(s, i, _)| s == service && *i == inside)
            .map(|&(_, _, local)| local)
            .unwrap_or_else(|| panic!("{service}:{inside} is no process of the deployment"))
    }

    /// `s` with every `service:port` as its local address.
    pub fn address(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (service, inside, local) in &self.ports {
            out = out.replace(
                &format!("{service}:{inside}"),
                &format!("127.0.0.1:{local}"),
            );
        }
        self.assert_mapped(&out);
        out
    }

    /// Arguments with a `service port` pair as `127.0.0.1 <local port>`,
    /// and any other service name (an announced address) as `127.0.0.1`.
    pub fn args(&self, args: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(args.len());
        let mut words = args.iter().peekable();
        while let Some(word) = words.next() {
            if !self.is_service(word) {
                out.push(word.clone());
                continue;
            }
            out.push("127.0.0.1".into());
            let port = words.peek().and_then(|p| p.parse::<u16>().ok());
            if let Some(inside) = port.filter(|&p| self.ports.iter().any(|x| x.1 == p)) {
                words.next();
                out.push(self.local(word, inside).to_string());
            }
        }
        out
    }

    /// A configuration file with each line's words mapped as [`Network::args`].
    pub fn conf(&self, text: &str) -> String {
        text.lines()
            .map(|line| {
                let words: Vec<String> = line.split_whitespace().map(String::from).collect();
                self.args(&words).join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn is_service(&self, word: &str) -> bool {
        self.ports.iter().any(|(s, _, _)| s == word)
    }

    /// Panics when `s` still names a service's `service:port`: an address
    /// the test would not reach (a port the mapping does not know of).
    fn assert_mapped(&self, s: &str) {
        for (service, _, _) in &self.ports {
            assert!(
                !s.contains(&format!("{service}:")),
                "{s:?} names {service} at a port no process of the deployment listens on"
            );
        }
    }
}
