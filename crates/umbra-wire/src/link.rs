//! What every `umbra://` link has in common: a fixed prefix, `key=value`
//! pairs, a host name or address and a port. Invite links ([`crate::invite`])
//! and proxy links ([`crate::proxy`]) are built on this.

/// The `key=value` pairs after `prefix`, or `None` if the link does not start with it.
pub(crate) fn fields<'a>(link: &'a str, prefix: &str) -> Option<Fields<'a>> {
    let query = link.trim().strip_prefix(prefix)?;
    Some(Fields(
        query.split('&').filter_map(|p| p.split_once('=')).collect(),
    ))
}

/// A link's fields; the first occurrence of a key wins.
pub(crate) struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// Whether `host` can be a DNS name, an IPv4 address or a bracketed IPv6 address.
pub(crate) fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// A port number in 1..=65535.
pub(crate) fn port(text: &str) -> Option<u16> {
    text.parse().ok().filter(|p| *p != 0)
}
