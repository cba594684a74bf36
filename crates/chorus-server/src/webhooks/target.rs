//! Where a webhook may go: public unicast addresses only, unless `webhook_allow_private`
//! lets loopback and private ones through (local setups, tests). The URL's host is
//! checked before anything is sent (an IP literal, a metadata name), and every address a
//! name resolves to is checked inside the HTTP client's resolver ([`CheckedResolver`]),
//! so the client connects only to addresses that passed: there is no second lookup for
//! a rebinding DNS server to answer differently. When in doubt, refuse.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a target was refused; nothing was sent to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

impl Refused {
    /// A refusal with its reason (shown to server admins in the delivery log).
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// A special-purpose address range a webhook is not sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64/10, carrier-grade NAT.
    SharedAddressSpace,
    /// fc00::/7.
    UniqueLocal,
    LinkLocal,
    Multicast,
    Unspecified,
    Broadcast,
    Documentation,
    /// Reserved, deprecated or protocol-specific (0/8, 240/4, 198.18/15, 2001::/23, …).
    Reserved,
    /// A cloud instance-metadata endpoint, by address.
    Metadata,
}

impl Range {
    /// Ranges `webhook_allow_private` opens: addresses of the server's own machine and
    /// network. Link-local (where metadata endpoints live), multicast and the rest stay
    /// closed.
    pub fn is_private(self) -> bool {
        matches!(
            self,
            Self::Loopback | Self::Private | Self::SharedAddressSpace | Self::UniqueLocal
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            Self::UniqueLocal => "a unique-local address",
            Self::LinkLocal => "a link-local address",
            Self::Multicast => "a multicast address",
            Self::Unspecified => "the unspecified address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Reserved => "a reserved or special-purpose address",
            Self::Metadata => "a cloud metadata endpoint",
        }
    }
}

/// Cloud metadata endpoints by address, refused whatever the setting (AWS, GCP, Azure,
/// Oracle: 169.254.169.254; ECS tasks: 169.254.170.2; Alibaba: 100.100.100.200).
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
/// AWS's IPv6 metadata endpoint, `fd00:ec2::254`.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];
/// Cloud metadata endpoints by name, refused before any lookup.
const METADATA_NAMES: [&str; 6] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
];

/// The special-purpose range `ip` is in; `None` for a public unicast address.
pub fn classify(ip: IpAddr) -> Option<Range> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Range> {
    if METADATA_V4.contains(&ip) {
        return Some(Range::Metadata);
    }
    let range = match ip.octets() {
        [0, 0, 0, 0] => Range::Unspecified,
        [255, 255, 255, 255] => Range::Broadcast,
        // "This network": Linux connects 0.x.y.z to the local host.
        [0, ..] => Range::Reserved,
        [127, ..] => Range::Loopback,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => Range::Private,
        [100, 64..=127, ..] => Range::SharedAddressSpace,
        [169, 254, ..] => Range::LinkLocal,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Range::Documentation,
        // IETF protocol assignments, the old 6to4 relay anycast, benchmarking.
        [192, 0, 0, _] | [192, 88, 99, _] | [198, 18..=19, ..] => Range::Reserved,
        [224..=239, ..] => Range::Multicast,
        [240..=255, ..] => Range::Reserved,
        _ => return None,
    };
    Some(range)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Range> {
    if METADATA_V6.contains(&ip) {
        return Some(Range::Metadata);
    }
    if ip.is_unspecified() {
        return Some(Range::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Range::Loopback);
    }
    // Forms that carry an IPv4 address a connection may end up at: judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4); // ::ffff:a.b.c.d
    }
    let s = ip.segments();
    let low_v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] {
        // IPv4-compatible ::a.b.c.d (deprecated): never public.
        return Some(classify_v4(low_v4).unwrap_or(Range::Reserved));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(low_v4); // NAT64, 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 routes to a.b.c.d.
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    let range = match s {
        [0xff00..=0xffff, ..] => Range::Multicast,
        [0xfe80..=0xfebf, ..] => Range::LinkLocal,
        [0xfc00..=0xfdff, ..] => Range::UniqueLocal,
        [0x2001, 0x0db8, ..] | [0x3fff, 0..=0x0fff, ..] => Range::Documentation,
        // IETF protocol assignments: Teredo (which hides an IPv4 address), ORCHID, …
        [0x2001, 0..=0x01ff, ..] => Range::Reserved,
        // Everything outside global unicast 2000::/3: site-local, discard-only, …
        [first, ..] if first & 0xe000 != 0x2000 => Range::Reserved,
        _ => return None,
    };
    Some(range)
}

/// What a worker may send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Loopback, private, shared and unique-local addresses allowed
    /// (`webhook_allow_private`).
    pub allow_private: bool,
    /// The request would travel in the clear (`http://`): public addresses are refused,
    /// since an event's text must not cross the internet unencrypted. Plain HTTP is
    /// for the server's own machine and network, where `allow_private` lets it through.
    pub cleartext: bool,
}

impl TargetPolicy {
    /// The policy of a request to `url`: cleartext unless `https://`.
    pub fn for_url(allow_private: bool, url: &Url) -> Self {
        Self {
            allow_private,
            cleartext: url.scheme() != "https",
        }
    }

    /// Whether a request may connect to `ip`.
    pub fn check_ip(self, ip: IpAddr) -> Result<(), Refused> {
        match classify(ip) {
            None if self.cleartext => Err(Refused(format!(
                "{ip} is a public address: a webhook to it must be https://"
            ))),
            None => Ok(()),
            Some(range) if range.is_private() && self.allow_private => Ok(()),
            Some(range) if range.is_private() => Err(Refused(format!(
                "{ip} is {}; webhook_allow_private is off",
                range.describe()
            ))),
            Some(range) => Err(Refused(format!("{ip} is {}", range.describe()))),
        }
    }

    /// Whether a host name may be looked up at all (metadata names may not).
    pub fn check_name(self, name: &str) -> Result<(), Refused> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if METADATA_NAMES.contains(&name.as_str()) {
            return Err(Refused(format!("{name} is a cloud metadata endpoint")));
        }
        Ok(())
    }

    /// Checks a URL before sending: an http(s) scheme, no credentials, and its host (an
    /// IP literal, which the client connects to without a lookup; a name is checked
    /// here against the metadata names, and its addresses by [`CheckedResolver`] when
    /// the client looks it up).
    pub fn check_url(self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!(
                "the scheme {} is not http(s)",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused("the URL carries credentials".to_owned()));
        }
        // The parser reads an IPv4 host in whatever form it was given (`0x7f000001`,
        // `127.1`) as the address it is; anything else is a name.
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => self.check_name(name),
            None => Err(Refused("the URL has no host".to_owned())),
        }
    }

    /// Every address `name` resolved to must pass; one that does not refuses them all
    /// (a name that mixes public and internal addresses is not trusted).
    fn check_resolved(self, name: &str, addrs: &[SocketAddr]) -> Result<(), Refused> {
        for addr in addrs {
            self.check_ip(addr.ip())
                .map_err(|why| Refused(format!("{name} resolves to {why}")))?;
        }
        Ok(())
    }
}

/// The webhook client's DNS resolver: the system's lookup, then [`TargetPolicy`] on
/// every address. The client connects to what this returns and nothing else.
#[derive(Debug, Clone, Copy)]
pub struct CheckedResolver(pub TargetPolicy);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            policy.check_name(&name)?;
            // Port 0: the client puts the URL's port on the addresses.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            policy.check_resolved(&name, &addrs)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The refusal somewhere in `err`'s chain of causes (the resolver's answer travels
/// inside the client's connect error).
pub fn refusal<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a test address")
    }

    #[test]
    fn plain_http_reaches_private_addresses_only() {
        let url = |u: &str| Url::parse(u).expect("a test URL");
        let plain = TargetPolicy::for_url(true, &url("http://example.com/h"));
        let tls = TargetPolicy::for_url(true, &url("https://example.com/h"));
        assert!(plain.cleartext && !tls.cleartext);
        let public = ip("93.184.216.34");
        assert!(tls.check_ip(public).is_ok());
        let refused = plain.check_ip(public).expect_err("public over http");
        assert!(
            refused.to_string().contains("must be https://"),
            "{refused}"
        );
        assert!(plain.check_url(&url("http://93.184.216.34/h")).is_err());
        // The server's own network, where webhook_allow_private lets it.
        assert!(plain.check_ip(ip("127.0.0.1")).is_ok());
        assert!(plain.check_ip(ip("10.1.2.3")).is_ok());
        let closed = TargetPolicy::for_url(false, &url("http://10.1.2.3/h"));
        assert!(closed.check_ip(ip("10.1.2.3")).is_err());
        // A name's addresses are judged the same way by the resolver.
        let addrs = [SocketAddr::new(public, 0)];
        assert!(plain.check_resolved("example.com", &addrs).is_err());
        assert!(tls.check_resolved("example.com", &addrs).is_ok());
    }

    #[test]
    fn addresses_are_classified_by_range() {
        use Range::*;
        let table: &[(&str, Option<Range>)] = &[
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("1.1.1.1", None),
            ("172.15.255.255", None),
            ("172.32.0.1", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("223.255.255.255", None),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Reserved)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("169.254.170.2", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.1", Some(Documentation)),
            ("203.0.113.1", Some(Documentation)),
            ("198.18.0.1", Some(Reserved)),
            ("192.88.99.1", Some(Reserved)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            // IPv6
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:80b::200e", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Reserved)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(Metadata)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001::1", Some(Reserved)),    // Teredo
            ("2001:10::1", Some(Reserved)), // ORCHID
            ("100::1", Some(Reserved)),     // discard-only
            ("4000::1", Some(Reserved)),    // not global unicast
            // IPv4 inside IPv6: judged by the IPv4 address.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::10.0.0.1", Some(Private)),
            ("::8.8.8.8", Some(Reserved)),
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(Metadata)),
            ("64:ff9b::8.8.8.8", None),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:c0a8:101::1", Some(Private)),
            ("2002:808:808::1", None),
        ];
        for (text, want) in table {
            assert_eq!(classify(ip(text)), *want, "{text}");
        }
    }

    #[test]
    fn the_private_switch_opens_only_the_private_ranges() {
        let strict = TargetPolicy {
            allow_private: false,
            cleartext: false,
        };
        let open = TargetPolicy {
            allow_private: true,
            cleartext: false,
        };
        for text in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "100.64.0.1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            let err = strict.check_ip(ip(text)).expect_err(text);
            assert!(
                err.to_string().contains("webhook_allow_private is off"),
                "{err}"
            );
            assert_eq!(open.check_ip(ip(text)), Ok(()), "{text}");
        }
        for text in [
            "169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
            "169.254.1.1",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
        ] {
            assert!(open.check_ip(ip(text)).is_err(), "{text}");
        }
        assert_eq!(strict.check_ip(ip("8.8.8.8")), Ok(()));
    }

    #[test]
    fn metadata_names_are_refused_before_any_lookup() {
        let open = TargetPolicy {
            allow_private: true,
            cleartext: false,
        };
        for name in [
            "metadata",
            "metadata.google.internal",
            "METADATA.Google.Internal.",
        ] {
            assert!(open.check_name(name).is_err(), "{name}");
        }
        assert_eq!(open.check_name("example.com"), Ok(()));
        assert_eq!(open.check_name("metadata.example.com"), Ok(()));
    }

    #[test]
    fn urls_are_checked_by_scheme_credentials_and_literal_host() {
        let strict = TargetPolicy {
            allow_private: false,
            cleartext: false,
        };
        let check = |text: &str| strict.check_url(&Url::parse(text).expect("a test URL"));
        assert_eq!(check("http://example.com/hook"), Ok(()));
        assert_eq!(check("http://8.8.8.8:8080/"), Ok(()));
        for text in [
            "ftp://example.com/",
            "http://u:p@example.com/",
            "http://127.0.0.1/",
            "http://0x7f000001/", // the parser reads it as 127.0.0.1
            "http://2130706433/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/",
            "http://metadata.google.internal/",
        ] {
            assert!(check(text).is_err(), "{text}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_an_internal_address() {
        let strict = CheckedResolver(TargetPolicy {
            allow_private: false,
            cleartext: false,
        });
        let name: Name = "localhost".parse().expect("a name");
        let err = match strict.resolve(name).await {
            Ok(_) => panic!("localhost resolved for a strict policy"),
            Err(err) => err,
        };
        let refused = refusal(err.as_ref()).expect("a refusal");
        assert!(
            refused.to_string().starts_with("localhost resolves to "),
            "{refused}"
        );
        let open = CheckedResolver(TargetPolicy {
            allow_private: true,
            cleartext: false,
        });
        let addrs: Vec<SocketAddr> = match open.resolve("localhost".parse().expect("a name")).await
        {
            Ok(addrs) => addrs.collect(),
            Err(err) => panic!("{err}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
