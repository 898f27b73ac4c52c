//! The kernel's IPv4 routing table as `/proc/net/route` shows it: which interface a packet to an
//! address leaves by. Read by the plan (warnings about cycling the underlay) and by `applier try`
//! (the underlay must still reach every tunnel peer).

use std::net::Ipv4Addr;

pub struct Route {
    pub iface: String,
    dest: u32,
    mask: u32,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.mask == 0
    }
}

pub struct Routes(pub Vec<Route>);

impl Routes {
    /// Parses `/proc/net/route`: interface, destination and mask (hex, in the kernel's byte
    /// order). Lines it cannot read are skipped: the table is the kernel's, not input.
    pub fn parse(text: &str) -> Routes {
        let hex = |s: &str| {
            u32::from_str_radix(s, 16)
                .ok()
                .map(|v| u32::from_be_bytes(v.to_le_bytes()))
        };
        Routes(
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    Some(Route {
                        iface: w.first()?.to_string(),
                        dest: hex(w.get(1)?)?,
                        mask: hex(w.get(7)?)?,
                    })
                })
                .collect(),
        )
    }

    /// The interface a packet to `ip` leaves by (longest prefix), if any route covers it.
    pub fn via(&self, ip: Ipv4Addr) -> Option<&str> {
        let ip = u32::from(ip);
        self.0
            .iter()
            .filter(|r| ip & r.mask == r.dest)
            .max_by_key(|r| r.mask.count_ones())
            .map(|r| r.iface.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Routes;

    const TABLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn longest_prefix_wins() {
        let r = Routes::parse(TABLE);
        assert_eq!(r.via("192.168.0.7".parse().unwrap()), Some("eth1"));
        assert_eq!(r.via("8.8.8.8".parse().unwrap()), Some("eth0"));
        assert!(r.0[0].is_default());
    }

    #[test]
    fn no_route_is_none() {
        let r = Routes::parse(
            &TABLE
                .lines()
                .take(1)
                .chain(TABLE.lines().skip(2))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        assert_eq!(r.via("8.8.8.8".parse().unwrap()), None);
        assert_eq!(r.via("192.168.0.7".parse().unwrap()), Some("eth1"));
    }
}
