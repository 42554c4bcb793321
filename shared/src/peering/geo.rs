//! Country and autonomous system of an IP address, from MaxMind-format (`.mmdb`)
//! databases, so that peer selection can prefer peers spread over many countries and
//! networks to peers that one operator could run from one place.
//!
//! Any database in the MaxMind DB format works: GeoLite2/GeoIP2 Country or City for the
//! country, GeoLite2/GeoIP2 ASN for the AS number and its organization, or one database
//! that carries both kinds of field. The files are read whole into memory when opened
//! (the reader's memory map would need unsafe code, which the workspace forbids); a
//! GeoLite2 Country plus ASN pair is about 20 MB.

use std::{
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use maxminddb::Reader;
use serde::Deserialize;
use tracing::debug;

use crate::error::ErrorChain;

/// What the databases say about an IP.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 code of the country, e.g. `"DE"`: where the databases place
    /// the address, else where its network is registered.
    pub country: Option<String>,
    /// Number of the autonomous system that announces the address.
    pub asn: Option<u32>,
    /// Organization the autonomous system is registered to; only set with [`Self::asn`].
    pub as_org: Option<String>,
}

/// Why [`GeoDb::open`] refused a database.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("geo database {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read geo database {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("geo database {} is not a MaxMind DB (.mmdb) file ({reason})", path.display())]
    NotADatabase { path: PathBuf, reason: String },
}

/// One or more opened MaxMind databases, asked in the order they were given.
#[derive(Debug)]
pub struct GeoDb {
    dbs: Vec<Database>,
}

#[derive(Debug)]
struct Database {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

/// The fields of a record that [`GeoDb`] reads; every other field is skipped unread.
#[derive(Deserialize)]
struct Record {
    country: Option<Country>,
    registered_country: Option<Country>,
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<String>,
}

#[derive(Deserialize)]
struct Country {
    iso_code: Option<String>,
}

impl GeoDb {
    /// Opens every database (GeoLite2/GeoIP2 Country or City: `country.iso_code`,
    /// falling back to `registered_country.iso_code`; ASN: `autonomous_system_number`,
    /// `autonomous_system_organization`; a database carrying both kinds of field works
    /// too). Each file is read whole into memory. No paths give a `GeoDb` that knows
    /// nothing.
    ///
    /// Errors name the file and what is wrong with it: missing, unreadable, or not a
    /// MaxMind DB.
    pub fn open(paths: &[PathBuf]) -> Result<GeoDb, GeoError> {
        let dbs = paths
            .iter()
            .map(|p| Database::open(p))
            .collect::<Result<_, _>>()?;
        Ok(GeoDb { dbs })
    }

    /// What the databases say about `ip`; empty when no database has it. An
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up as the IPv4 address.
    ///
    /// Each field comes from the first database, in the order given to [`Self::open`],
    /// that has it; the AS number and organization always come from the same record.
    /// Never fails: a record that cannot be decoded is logged at debug and skipped.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let ip = ip.to_canonical();
        let mut info = GeoInfo::default();
        for db in &self.dbs {
            if info.country.is_some() && info.asn.is_some() {
                break;
            }
            let Some(record) = db.record(ip) else {
                continue;
            };
            if info.country.is_none() {
                info.country = [record.country, record.registered_country]
                    .into_iter()
                    .flatten()
                    .find_map(|c| c.iso_code.filter(|code| !code.is_empty()));
            }
            if info.asn.is_none() && record.autonomous_system_number.is_some() {
                info.asn = record.autonomous_system_number;
                info.as_org = record
                    .autonomous_system_organization
                    .filter(|org| !org.is_empty());
            }
        }
        info
    }
}

impl Database {
    fn open(path: &Path) -> Result<Database, GeoError> {
        let bytes = fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => GeoError::Missing {
                path: path.to_path_buf(),
            },
            _ => GeoError::Unreadable {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let reader = Reader::from_source(bytes).map_err(|e| GeoError::NotADatabase {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let meta = reader.metadata();
        debug!(
            path = %path.display(),
            database_type = %meta.database_type,
            ip_version = meta.ip_version,
            build_epoch = meta.build_epoch,
            "geo database opened"
        );
        Ok(Database {
            path: path.to_path_buf(),
            reader,
        })
    }

    /// The record for `ip`, or `None` when this database has none (or only a corrupt
    /// one). An IPv4-only database has no record for an IPv6 address.
    fn record(&self, ip: IpAddr) -> Option<Record> {
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return None;
        }
        let decoded = self
            .reader
            .lookup(ip)
            .and_then(|found| found.decode::<Record>());
        match decoded {
            Ok(record) => record,
            Err(e) => {
                debug!(
                    path = %self.path.display(),
                    %ip,
                    error = %ErrorChain(&e),
                    "geo database record skipped"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mmdb_writer::{IpVersion, Value, Writer, ipnet::IpNet};

    use super::*;

    fn country(code: &str) -> Value {
        Value::map([
            ("geoname_id", Value::from(1u32)),
            ("iso_code", Value::from(code)),
            ("names", Value::map([("en", Value::from("Somewhere"))])),
        ])
    }

    fn write(dir: &Path, name: &str, writer: &Writer) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, writer.to_bytes().unwrap()).unwrap();
        path
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A GeoLite2-Country-style database (IPv6 tree, as MaxMind ships it) and a
    /// GeoLite2-ASN-style one with an IPv4-only tree.
    fn country_and_asn(dir: &Path) -> Vec<PathBuf> {
        let mut w = Writer::new("GeoLite2-Country");
        w.insert_value(
            net("192.0.2.0/24"),
            Value::map([
                ("continent", Value::map([("code", Value::from("EU"))])),
                ("country", country("DE")),
                ("registered_country", country("NL")),
            ]),
        )
        .unwrap();
        // Only the registered country is known, as for some anycast networks.
        w.insert_value(
            net("198.51.100.0/24"),
            Value::map([("registered_country", country("FR"))]),
        )
        .unwrap();
        w.insert_value(
            net("2001:db8::/32"),
            Value::map([("country", country("JP"))]),
        )
        .unwrap();
        let country_db = write(dir, "country.mmdb", &w);

        let mut w = Writer::builder("GeoLite2-ASN")
            .ip_version(IpVersion::V4)
            .build();
        w.insert_value(
            net("192.0.2.0/25"),
            Value::map([
                ("autonomous_system_number", Value::from(64_496u32)),
                ("autonomous_system_organization", Value::from("Example Net")),
            ]),
        )
        .unwrap();
        w.insert_value(
            net("203.0.113.0/24"),
            Value::map([("autonomous_system_number", Value::from(64_511u32))]),
        )
        .unwrap();
        let asn_db = write(dir, "asn.mmdb", &w);
        vec![country_db, asn_db]
    }

    #[test]
    fn country_and_asn_databases_answer_together() {
        let dir = tempfile::tempdir().unwrap();
        let db = GeoDb::open(&country_and_asn(dir.path())).unwrap();

        assert_eq!(
            db.lookup(ip("192.0.2.10")),
            GeoInfo {
                country: Some("DE".into()),
                asn: Some(64_496),
                as_org: Some("Example Net".into()),
            }
        );
        // Outside the ASN database's /25.
        assert_eq!(
            db.lookup(ip("192.0.2.200")),
            GeoInfo {
                country: Some("DE".into()),
                ..GeoInfo::default()
            }
        );
        // Falls back to the registered country.
        assert_eq!(db.lookup(ip("198.51.100.7")).country.as_deref(), Some("FR"));
        // Only in the ASN database, without an organization.
        assert_eq!(
            db.lookup(ip("203.0.113.9")),
            GeoInfo {
                asn: Some(64_511),
                ..GeoInfo::default()
            }
        );
    }

    #[test]
    fn ipv4_mapped_address_is_looked_up_as_ipv4() {
        let dir = tempfile::tempdir().unwrap();
        let db = GeoDb::open(&country_and_asn(dir.path())).unwrap();
        // The ASN database is IPv4-only: without unmapping it would have no answer.
        assert_eq!(
            db.lookup(ip("::ffff:192.0.2.10")),
            db.lookup(ip("192.0.2.10"))
        );
        assert_eq!(db.lookup(ip("::ffff:192.0.2.10")).asn, Some(64_496));
    }

    #[test]
    fn ipv6_network() {
        let dir = tempfile::tempdir().unwrap();
        let db = GeoDb::open(&country_and_asn(dir.path())).unwrap();
        // The IPv4-only ASN database is skipped for an IPv6 address.
        assert_eq!(
            db.lookup(ip("2001:db8:1::5")),
            GeoInfo {
                country: Some("JP".into()),
                ..GeoInfo::default()
            }
        );
    }

    #[test]
    fn address_in_no_network_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = GeoDb::open(&country_and_asn(dir.path())).unwrap();
        assert_eq!(db.lookup(ip("8.8.8.8")), GeoInfo::default());
        assert_eq!(db.lookup(ip("2a00::1")), GeoInfo::default());
        assert_eq!(
            GeoDb::open(&[]).unwrap().lookup(ip("192.0.2.10")),
            GeoInfo::default()
        );
    }

    #[test]
    fn one_database_with_both_kinds_of_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new("Jantar-Test");
        w.insert_value(
            net("127.1.0.0/16"),
            Value::map([
                ("country", country("SE")),
                ("registered_country", country("SE")),
                ("autonomous_system_number", Value::from(64_500u32)),
                ("autonomous_system_organization", Value::from("Loop AB")),
            ]),
        )
        .unwrap();
        let db = GeoDb::open(&[write(dir.path(), "both.mmdb", &w)]).unwrap();
        assert_eq!(
            db.lookup(ip("127.1.2.3")),
            GeoInfo {
                country: Some("SE".into()),
                asn: Some(64_500),
                as_org: Some("Loop AB".into()),
            }
        );
    }

    #[test]
    fn undecodable_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        // A record that is a string, not a map, comes first; the next database answers.
        let mut w = Writer::new("Odd");
        w.insert_value(net("192.0.2.0/24"), Value::from("not a map"))
            .unwrap();
        let mut paths = vec![write(dir.path(), "odd.mmdb", &w)];
        paths.extend(country_and_asn(dir.path()));
        let db = GeoDb::open(&paths).unwrap();
        assert_eq!(db.lookup(ip("192.0.2.10")).country.as_deref(), Some("DE"));
    }

    #[test]
    fn file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoLite2-Country.mmdb");
        fs::write(&path, b"<html>404 Not Found</html>").unwrap();
        let err = GeoDb::open(std::slice::from_ref(&path)).unwrap_err();
        assert!(matches!(err, GeoError::NotADatabase { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a MaxMind DB"), "{msg}");
    }

    #[test]
    fn missing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = country_and_asn(dir.path());
        let missing = dir.path().join("GeoLite2-City.mmdb");
        paths.push(missing.clone());
        let err = GeoDb::open(&paths).unwrap_err();
        assert!(matches!(err, GeoError::Missing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn directory_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let err = GeoDb::open(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, GeoError::Unreadable { .. }), "{err:?}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
