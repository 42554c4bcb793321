//! GeoIP databases for the multi-process tests: a node's country and AS lookups read
//! MaxMind-format (`.mmdb`) files, and a test hands it one built here that places the
//! test's own (loopback) addresses in whatever countries and networks it needs.

use std::{fs::Permissions, io::Write, os::unix::fs::PermissionsExt, path::Path};

use anyhow::{Context, Result};
use ipnet::IpNet;
use mmdb_writer::{Value, Writer};

/// One network and what the database says about it.
#[derive(Clone, Debug)]
pub struct GeoEntry {
    /// Any network, loopback included (e.g. `127.1.0.0/16`).
    pub network: IpNet,
    /// ISO 3166-1 alpha-2 code, e.g. `"DE"`.
    pub country: &'static str,
    /// Autonomous system number, e.g. one of the private-use 64512..=65534.
    pub asn: u32,
    /// Organization the AS is registered to.
    pub as_org: &'static str,
}

impl GeoEntry {
    /// The record: GeoLite2-Country's `country` and `registered_country` (with
    /// `iso_code`) and GeoLite2-ASN's two fields.
    fn record(&self) -> Value {
        let country = || Value::map([("iso_code", Value::from(self.country))]);
        Value::map([
            ("country", country()),
            ("registered_country", country()),
            ("autonomous_system_number", Value::from(self.asn)),
            ("autonomous_system_organization", Value::from(self.as_org)),
        ])
    }
}

/// Writes one database carrying both the GeoLite2-Country fields and the GeoLite2-ASN
/// fields for each entry, so a node given only this file knows country and AS number.
/// The file appears whole or not at all (a temporary file beside it, then a rename).
/// Where entries overlap, the later one wins for the addresses they share.
pub fn write_database(path: &Path, entries: &[GeoEntry]) -> Result<()> {
    let mut writer = Writer::new("Jantar-Test-GeoIP");
    for entry in entries {
        writer
            .insert_value(entry.network, entry.record())
            .with_context(|| format!("cannot add {} to the test GeoIP database", entry.network))?;
    }
    let bytes = writer
        .to_bytes()
        .context("cannot serialize the test GeoIP database")?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".")
        .suffix(".tmp")
        // Readable by every node, whichever user a test runs it as.
        .permissions(Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(&bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the test GeoIP database to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use maxminddb::{Reader, path};

    use super::*;

    #[test]
    fn writes_loopback_and_ipv6_networks_readers_can_read() {
        let entries = [
            GeoEntry {
                network: "127.1.0.0/16".parse().unwrap(),
                country: "DE",
                asn: 64_496,
                as_org: "Loopback One",
            },
            GeoEntry {
                network: "127.2.0.0/16".parse().unwrap(),
                country: "BR",
                asn: 64_497,
                as_org: "Loopback Two",
            },
            GeoEntry {
                network: "fd00:1::/32".parse().unwrap(),
                country: "JP",
                asn: 64_498,
                as_org: "Unique Local",
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geo.mmdb");
        write_database(&path, &entries).unwrap();
        // Writing again replaces the file.
        write_database(&path, &entries).unwrap();

        let reader = Reader::open_readfile(&path).unwrap();
        for (ip, want) in [
            ("127.1.9.9", &entries[0]),
            ("127.2.0.1", &entries[1]),
            ("fd00:1::7", &entries[2]),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let found = reader.lookup(ip).unwrap();
            let text = |p: &[maxminddb::PathElement<'_>]| found.decode_path::<String>(p).unwrap();
            assert_eq!(
                text(&path!["country", "iso_code"]).as_deref(),
                Some(want.country),
                "{ip}"
            );
            assert_eq!(
                text(&path!["registered_country", "iso_code"]).as_deref(),
                Some(want.country),
                "{ip}"
            );
            assert_eq!(
                found
                    .decode_path::<u32>(&path!["autonomous_system_number"])
                    .unwrap(),
                Some(want.asn),
                "{ip}"
            );
            assert_eq!(
                text(&path!["autonomous_system_organization"]).as_deref(),
                Some(want.as_org),
                "{ip}"
            );
        }
        let outside: IpAddr = "127.3.0.1".parse().unwrap();
        assert!(!reader.lookup(outside).unwrap().has_data());
        // Only the database is left in the directory, no temporary file.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["geo.mmdb"]);
    }
}
