//! The host names the AWS SDKs' endpoint rules produce, read back: `{service}[-fips].{region}.
//! {suffix}` for every partition's DNS suffix and dual-stack suffix (the SDKs' partition table),
//! plus the private DNS names of interface VPC endpoints
//! (`vpce-….{service}.{region}.vpce.{suffix}`). Pure and allocation-free: it runs for every
//! forward request.

/// The DNS suffixes of every AWS partition, as the SDKs' partition table spells them: each
/// partition's `dnsSuffix`, then its `dualStackDnsSuffix`. `aws` and `aws-us-gov` share theirs.
pub const PARTITION_SUFFIXES: [&str; 14] = [
    // aws, aws-us-gov
    "amazonaws.com",
    "api.aws",
    // aws-cn
    "amazonaws.com.cn",
    "api.amazonwebservices.com.cn",
    // aws-eusc
    "amazonaws.eu",
    "api.amazonwebservices.eu",
    // aws-iso
    "c2s.ic.gov",
    "api.aws.ic.gov",
    // aws-iso-b
    "sc2s.sgov.gov",
    "api.aws.scloud",
    // aws-iso-e
    "cloud.adc-e.uk",
    "api.cloud-aws.adc-e.uk",
    // aws-iso-f
    "csp.hci.ic.gov",
    "api.aws.hci.ic.gov",
];

/// An AWS endpoint host name, read back into what the endpoint rules built it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsHost<'a> {
    /// The endpoint prefix without `-fips` (`chime`, `messaging-chime`, …), as spelled.
    pub service: &'a str,
    /// The FIPS variant (`{service}-fips`).
    pub fips: bool,
    /// The region label (`us-east-1`, `aws-global`, …), as spelled.
    pub region: &'a str,
    /// An interface VPC endpoint's private DNS name.
    pub vpce: bool,
}

/// `host` without a trailing `.` (a fully qualified name is the same host).
fn trim_root(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// `s` without `.{suffix}` at its end (ASCII case ignored), if it ends so.
fn strip_dot_suffix<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len() + 1)?;
    let (head, tail) = s.split_at_checked(cut)?;
    (tail.as_bytes()[0] == b'.' && tail[1..].eq_ignore_ascii_case(suffix)).then_some(head)
}

/// A DNS label as endpoint rules produce them: letters, digits and `-`, not empty.
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Reads an AWS endpoint host (any case, with or without a trailing `.`, no port). A name that
/// only resembles one (an extra label, a label that is not a DNS label) is not one.
pub fn parse(host: &str) -> Option<AwsHost<'_>> {
    let host = trim_root(host);
    // No suffix ends with another at a label boundary, so at most one matches.
    let rest = PARTITION_SUFFIXES.iter().find_map(|s| strip_dot_suffix(host, s))?;
    let (rest, vpce) = match strip_dot_suffix(rest, "vpce") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (rest, region) = rest.rsplit_once('.')?;
    let (endpoint_id, service) = match rest.rsplit_once('.') {
        Some((id, svc)) => (Some(id), svc),
        None => (None, rest),
    };
    // A VPC endpoint name has the endpoint's own labels first; a public endpoint has none.
    match (vpce, endpoint_id) {
        (true, Some(id)) if id.split('.').all(is_label) => {}
        (false, None) => {}
        _ => return None,
    }
    if !is_label(region) || !is_label(service) {
        return None;
    }
    let (service, fips) = match service.len().checked_sub(5).and_then(|i| service.split_at_checked(i)) {
        Some((svc, tail)) if tail.eq_ignore_ascii_case("-fips") && !svc.is_empty() => (svc, true),
        _ => (service, false),
    };
    Some(AwsHost {
        service,
        fips,
        region,
        vpce,
    })
}

/// The region whose credential scope a host's region label stands for: a partition's global
/// endpoint (`aws-global`) is signed for `us-east-1`, as the SDKs' partition table says.
pub fn signing_region(region: &str) -> &str {
    if region.eq_ignore_ascii_case("aws-global") {
        "us-east-1"
    } else {
        region
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(service: &str, fips: bool, region: &str, vpce: bool) -> AwsHost<'static> {
        AwsHost {
            service: Box::leak(service.to_string().into_boxed_str()),
            fips,
            region: Box::leak(region.to_string().into_boxed_str()),
            vpce,
        }
    }

    #[test]
    fn every_partition_and_variant() {
        for suffix in PARTITION_SUFFIXES {
            for (prefix, fips) in [("chime", false), ("chime-fips", true)] {
                let h = format!("{prefix}.r-1.{suffix}");
                assert_eq!(parse(&h), Some(host("chime", fips, "r-1", false)), "{h}");
                let v = format!("vpce-0a1b-c2d3.{prefix}.r-1.vpce.{suffix}");
                assert_eq!(parse(&v), Some(host("chime", fips, "r-1", true)), "{v}");
            }
        }
        assert_eq!(
            parse("IDENTITY-CHIME-FIPS.US-GOV-WEST-1.API.AWS."),
            Some(AwsHost {
                service: "IDENTITY-CHIME",
                fips: true,
                region: "US-GOV-WEST-1",
                vpce: false
            })
        );
        assert_eq!(
            parse("messaging-chime.us-iso-east-1.api.aws.ic.gov").map(|h| h.region),
            Some("us-iso-east-1")
        );
        assert_eq!(
            parse("vpce-0123456789abcdef0-abcdefgh-us-east-1a.messaging-chime.us-east-1.vpce.amazonaws.com")
                .map(|h| (h.service, h.vpce)),
            Some(("messaging-chime", true))
        );
    }

    #[test]
    fn no_suffix_ends_another() {
        for a in PARTITION_SUFFIXES {
            for b in PARTITION_SUFFIXES {
                assert!(a == b || !a.ends_with(&format!(".{b}")), "{a} ends with {b}");
            }
        }
    }

    #[test]
    fn look_alikes_are_not_endpoints() {
        for h in [
            "amazonaws.com",
            ".amazonaws.com",
            "chime.amazonaws.com",
            "x.chime.us-east-1.amazonaws.com",
            "chime..amazonaws.com",
            "chime.us east.amazonaws.com",
            "chime.us-east-1.amazonaws.com.evil.example",
            "chime.us-east-1.evilamazonaws.com",
            "chime.us-east-1.vpce.amazonaws.com",
            "a..b.chime.us-east-1.vpce.amazonaws.com",
            "",
            ".",
        ] {
            assert_eq!(parse(h), None, "{h}");
        }
    }

    #[test]
    fn signing_region_of_the_global_endpoint() {
        assert_eq!(signing_region("aws-global"), "us-east-1");
        assert_eq!(signing_region("eu-west-2"), "eu-west-2");
    }
}
