//! What a served certificate says about itself: its subject and issuer, the names it covers and
//! its validity, read from the leaf's DER (RFC 5280). `check` shows them, and ACME schedules the
//! renewal from the validity. Only these fields are read; nothing here verifies a certificate
//! (rustls does, for the clients).

use std::time::{Duration, SystemTime};

/// A certificate's subject, issuer, names and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leaf {
    /// The subject, as `CN=shorts.example.com, O=Example`.
    pub(crate) subject: String,
    /// The issuer, written like the subject.
    pub(crate) issuer: String,
    /// The DNS names and IP addresses of the subject alternative names, in their order.
    pub(crate) names: Vec<String>,
    /// The start of the validity (the Unix epoch for an earlier time).
    pub(crate) not_before: SystemTime,
    /// The end of the validity (the Unix epoch for an earlier time).
    pub(crate) not_after: SystemTime,
}

/// Why a certificate cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid X.509 certificate: {0}")]
pub(crate) struct X509Error(&'static str);

/// What a name that cannot be written out shows instead.
const INVALID_NAME: &str = "<X509Error: Invalid X.509 name>";

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0]`, constructed: the version.
const VERSION: u8 = 0xa0;
/// `[3]`, constructed: the extensions.
const EXTENSIONS: u8 = 0xa3;
/// `[2]` and `[7]` of `GeneralName`, primitive.
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;
/// 2.5.29.17, the subject alternative name extension.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads `der`, one DER certificate.
pub(crate) fn read(der: &[u8]) -> Result<Leaf, X509Error> {
    let mut certificate = Der(der).expect(SEQUENCE, "the certificate is not a SEQUENCE")?;
    let mut tbs = certificate.expect(SEQUENCE, "no TBSCertificate")?;
    tbs.optional(VERSION)?;
    tbs.expect(INTEGER, "no serial number")?;
    tbs.expect(SEQUENCE, "no signature algorithm")?;
    let issuer = tbs.expect(SEQUENCE, "no issuer")?;
    let mut validity = tbs.expect(SEQUENCE, "no validity")?;
    let not_before = time(&mut validity)?;
    let not_after = time(&mut validity)?;
    let subject = tbs.expect(SEQUENCE, "no subject")?;
    tbs.expect(SEQUENCE, "no subject public key")?;
    let mut names = Vec::new();
    while !tbs.0.is_empty() {
        let (tag, mut content) = tbs.next()?;
        if tag == EXTENSIONS {
            names = alternative_names(content.expect(SEQUENCE, "the extensions are not a SEQUENCE")?)?;
        }
    }
    Ok(Leaf {
        subject: name(subject).unwrap_or_else(|| INVALID_NAME.to_owned()),
        issuer: name(issuer).unwrap_or_else(|| INVALID_NAME.to_owned()),
        names,
        not_before,
        not_after,
    })
}

/// The rest of a DER value's content.
#[derive(Clone, Copy)]
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next value's tag and content.
    fn next(&mut self) -> Result<(u8, Der<'a>), X509Error> {
        let truncated = X509Error("truncated");
        let (&tag, rest) = self.0.split_first().ok_or(truncated.clone())?;
        if tag & 0x1f == 0x1f {
            return Err(X509Error("a tag number above 30"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(truncated.clone())?;
        let len = match first {
            0..=0x7f => usize::from(first),
            0x81..=0x84 => {
                let (bytes, after) = rest
                    .split_at_checked(usize::from(first & 0x7f))
                    .ok_or(truncated.clone())?;
                rest = after;
                bytes.iter().fold(0, |len, &b| (len << 8) | usize::from(b))
            }
            _ => return Err(X509Error("an indefinite or oversized length")),
        };
        let (content, rest) = rest.split_at_checked(len).ok_or(truncated)?;
        self.0 = rest;
        Ok((tag, Der(content)))
    }

    /// The next value's content, which must have `tag`.
    fn expect(&mut self, tag: u8, missing: &'static str) -> Result<Der<'a>, X509Error> {
        match self.next() {
            Ok((found, content)) if found == tag => Ok(content),
            Ok(_) => Err(X509Error(missing)),
            Err(e) => Err(e),
        }
    }

    /// The next value's content when it has `tag`; otherwise nothing is consumed.
    fn optional(&mut self, tag: u8) -> Result<Option<Der<'a>>, X509Error> {
        if self.0.first() == Some(&tag) {
            self.next().map(|(_, content)| Some(content))
        } else {
            Ok(None)
        }
    }
}

/// The next `Time` (UTCTime or GeneralizedTime, in UTC).
fn time(der: &mut Der<'_>) -> Result<SystemTime, X509Error> {
    let (tag, content) = der.next()?;
    let seconds = match tag {
        UTC_TIME => parse_time(content.0, 2),
        GENERALIZED_TIME => parse_time(content.0, 4),
        _ => None,
    }
    .ok_or(X509Error("a validity time that is not a UTC time"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or_default()))
}

/// Seconds since the Unix epoch of `YYMMDDHHMM[SS]Z` (UTCTime, `year_digits` 2: 1950 to 2049) or
/// `YYYYMMDDHHMM[SS[.fff]]Z` (GeneralizedTime, `year_digits` 4).
fn parse_time(text: &[u8], year_digits: usize) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (text, _fraction) = match text.split_once('.') {
        Some((whole, fraction)) if year_digits == 4 && fraction.bytes().all(|b| b.is_ascii_digit()) => {
            (whole, fraction)
        }
        Some(_) => return None,
        None => (text, ""),
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |at: usize, len: usize| text.get(at..at + len)?.parse::<i64>().ok();
    let year = match (year_digits, number(0, year_digits)?) {
        (2, yy @ 50..) => 1900 + yy,
        (2, yy) => 2000 + yy,
        (_, yyyy) => yyyy,
    };
    let at = year_digits;
    let (month, day, hour, minute) = (
        number(at, 2)?,
        number(at + 2, 2)?,
        number(at + 4, 2)?,
        number(at + 6, 2)?,
    );
    let second = match text.len() - at {
        8 => 0,
        10 => number(at + 8, 2)?,
        _ => return None,
    };
    let valid =
        (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60 && second < 61;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The DNS names and IP addresses of the subject alternative name extension, if any.
fn alternative_names(mut extensions: Der<'_>) -> Result<Vec<String>, X509Error> {
    let mut names = Vec::new();
    while !extensions.0.is_empty() {
        let mut extension = extensions.expect(SEQUENCE, "an extension is not a SEQUENCE")?;
        let id = extension.expect(OID, "an extension without its OID")?;
        extension.optional(BOOLEAN)?;
        let mut value = extension.expect(OCTET_STRING, "an extension without its value")?;
        if id.0 != SUBJECT_ALT_NAME {
            continue;
        }
        // A malformed list names nothing, like an absent one.
        let Ok(mut general_names) = value.expect(SEQUENCE, "") else {
            return Ok(Vec::new());
        };
        while let Ok((tag, content)) = general_names.next() {
            let name = match (tag, content.0.len()) {
                (DNS_NAME, _) => std::str::from_utf8(content.0).ok().map(str::to_owned),
                (IP_ADDRESS, 4) => <[u8; 4]>::try_from(content.0)
                    .ok()
                    .map(|v4| std::net::IpAddr::from(v4).to_string()),
                (IP_ADDRESS, 16) => <[u8; 16]>::try_from(content.0)
                    .ok()
                    .map(|v6| std::net::IpAddr::from(v6).to_string()),
                _ => None,
            };
            names.extend(name);
        }
    }
    Ok(names)
}

/// A distinguished name as `CN=a, O=b + OU=c`: its attributes in order, `+` between those of one
/// RDN. `None` when an attribute cannot be read.
fn name(mut rdns: Der<'_>) -> Option<String> {
    let mut text = String::new();
    while !rdns.0.is_empty() {
        let mut rdn = rdns.expect(SET, "").ok()?;
        if !text.is_empty() {
            text.push_str(", ");
        }
        let mut first = true;
        while !rdn.0.is_empty() {
            let mut attribute = rdn.expect(SEQUENCE, "").ok()?;
            let kind = attribute.expect(OID, "").ok()?;
            let (tag, value) = attribute.next().ok()?;
            if !first {
                text.push_str(" + ");
            }
            first = false;
            text.push_str(&attribute_name(kind.0)?);
            text.push('=');
            text.push_str(&attribute_value(tag, value.0)?);
        }
    }
    Some(text)
}

/// The usual abbreviation of an attribute type (`CN`), or its registered short name, or its OID.
fn attribute_name(oid: &[u8]) -> Option<String> {
    let known = match oid {
        [0x55, 0x04, 3] => "CN",
        [0x55, 0x04, 4] => "surname",
        [0x55, 0x04, 5] => "serialNumber",
        [0x55, 0x04, 6] => "C",
        [0x55, 0x04, 7] => "L",
        [0x55, 0x04, 8] => "ST",
        [0x55, 0x04, 9] => "streetAddress",
        [0x55, 0x04, 10] => "O",
        [0x55, 0x04, 11] => "OU",
        [0x55, 0x04, 12] => "title",
        [0x55, 0x04, 13] => "description",
        [0x55, 0x04, 15] => "businessCategory",
        [0x55, 0x04, 17] => "postalCode",
        [0x55, 0x04, 41] => "name",
        [0x55, 0x04, 42] => "givenName",
        [0x55, 0x04, 43] => "initials",
        [0x55, 0x04, 44] => "generationQualifier",
        [0x55, 0x04, 45] => "uniqueIdentifier",
        [0x55, 0x04, 46] => "dnQualifier",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "uid",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "Email",
        _ => return dotted(oid),
    };
    Some(known.to_owned())
}

/// An OID as `2.5.4.3`.
fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs = Vec::new();
    let mut arc: u64 = 0;
    for (i, &byte) in oid.iter().enumerate() {
        arc = arc.checked_mul(128)? | u64::from(byte & 0x7f);
        if byte & 0x80 != 0 {
            if i + 1 == oid.len() {
                return None;
            }
            continue;
        }
        if arcs.is_empty() {
            let first = (arc / 40).min(2);
            arcs.push(first);
            arcs.push(arc - first * 40);
        } else {
            arcs.push(arc);
        }
        arc = 0;
    }
    let text: Vec<String> = arcs.iter().map(u64::to_string).collect();
    (!text.is_empty()).then(|| text.join("."))
}

/// An attribute's value: the text of a string type, in hex (upper case) otherwise.
fn attribute_value(tag: u8, value: &[u8]) -> Option<String> {
    const TEXT: &[u8] = &[
        0x0c, // UTF8String
        0x12, // NumericString
        0x13, // PrintableString
        0x14, // T61String
        0x15, // VideotexString
        0x16, // IA5String
        0x07, // ObjectDescriptor
        0x19, // GraphicString
        0x1a, // VisibleString
        0x1b, // GeneralString
    ];
    const BMP_STRING: u8 = 0x1e;
    if TEXT.contains(&tag) {
        return std::str::from_utf8(value).ok().map(str::to_owned);
    }
    if tag == BMP_STRING {
        if !value.len().is_multiple_of(2) {
            return None;
        }
        let units = value
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
        return char::decode_utf16(units).collect::<Result<String, _>>().ok();
    }
    Some(value.iter().map(|b| format!("{b:02X}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
    use rcgen::{CertificateParams, DnType, DnValue, Issuer, KeyPair, SanType};

    fn key() -> KeyPair {
        KeyPair::generate().unwrap_or_else(|e| panic!("{e}"))
    }

    /// What x509-parser reads from the same certificate, as `check` showed it before.
    fn by_x509_parser(der: &[u8]) -> Leaf {
        let (_, parsed) = x509_parser::parse_x509_certificate(der).unwrap_or_else(|e| panic!("{e}"));
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or_default())
        };
        let names = match parsed.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip)
                            .ok()
                            .map(|v4| std::net::IpAddr::from(v4).to_string()),
                        16 => <[u8; 16]>::try_from(*ip)
                            .ok()
                            .map(|v6| std::net::IpAddr::from(v6).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Leaf {
            subject: parsed.subject().to_string(),
            issuer: parsed.issuer().to_string(),
            names,
            not_before: time(parsed.validity().not_before),
            not_after: time(parsed.validity().not_after),
        }
    }

    /// A value of the kind `kind` (0 to 5) for `text`, when that kind can hold it.
    fn dn_value(kind: u8, text: &str) -> Option<DnValue> {
        Some(match kind {
            0 => DnValue::Utf8String(text.to_owned()),
            // rcgen takes `?` in a PrintableString, but its DER writer (yasna) refuses it.
            1 if !text.contains('?') => DnValue::PrintableString(PrintableString::try_from(text).ok()?),
            1 => return None,
            2 => DnValue::Ia5String(Ia5String::try_from(text).ok()?),
            3 => DnValue::TeletexString(TeletexString::try_from(text).ok()?),
            4 => DnValue::BmpString(BmpString::try_from(text).ok()?),
            _ => DnValue::UniversalString(UniversalString::try_from(text).ok()?),
        })
    }

    const TYPES: [fn() -> DnType; 7] = [
        || DnType::CommonName,
        || DnType::OrganizationName,
        || DnType::OrganizationalUnitName,
        || DnType::CountryName,
        || DnType::LocalityName,
        || DnType::StateOrProvinceName,
        || DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 25]),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Subject, issuer, names and validity read as x509-parser reads them, whatever the
        /// attributes, their string types, the names and the dates (UTCTime before 2050,
        /// GeneralizedTime from 2050).
        #[test]
        fn reads_what_x509_parser_reads(
            attributes in prop::collection::vec((0..TYPES.len(), 0u8..6, "[ -~]{1,12}|[a-zé€日]{1,6}"), 0..5),
            dns in prop::collection::vec("[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){1,3}", 0..3),
            ips in prop::collection::vec(any::<std::net::IpAddr>(), 0..3),
            start in (1950i32..2100, 1u8..13, 1u8..29),
            days in 1i64..40_000,
            signed_by_another in any::<bool>(),
        ) {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
            params.distinguished_name = rcgen::DistinguishedName::new();
            for (kind, value_kind, text) in &attributes {
                if let Some(value) = dn_value(*value_kind, text) {
                    params.distinguished_name.push(TYPES[*kind](), value);
                }
            }
            for name in &dns {
                params.subject_alt_names.push(SanType::DnsName(Ia5String::try_from(name.as_str()).unwrap_or_else(|e| panic!("{e}"))));
            }
            params.subject_alt_names.extend(ips.iter().copied().map(SanType::IpAddress));
            let (year, month, day) = start;
            params.not_before = rcgen::date_time_ymd(year, month, day);
            params.not_after = rcgen::date_time_ymd(year, month, day) + std::time::Duration::from_secs(u64::try_from(days).unwrap_or_default() * 86_400 + 3_723);
            let subject_key = key();
            let cert = if signed_by_another {
                let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
                ca.distinguished_name.push(DnType::CommonName, "Test CA");
                ca.distinguished_name.push(DnType::OrganizationName, DnValue::PrintableString(PrintableString::try_from("Shorts").unwrap_or_else(|e| panic!("{e}"))));
                params.signed_by(&subject_key, &Issuer::new(ca, key()))
            } else {
                params.self_signed(&subject_key)
            }
            .unwrap_or_else(|e| panic!("{e}"));
            let der = cert.der();
            let read = read(der).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(&read, &by_x509_parser(der));
            prop_assert_eq!(read.names.len(), dns.len() + ips.len());
        }

        /// Whatever the bytes, reading them ends (with an error, or not) without a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = read(&bytes);
        }
    }

    #[test]
    fn a_certificate_cut_short_is_refused() {
        let key = key();
        let params =
            CertificateParams::new(vec!["shorts.example.com".to_owned()]).unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let der = cert.der();
        assert_eq!(
            read(der).map(|leaf| leaf.names),
            Ok(vec!["shorts.example.com".to_owned()])
        );
        for len in 0..der.len() {
            assert!(read(&der[..len]).is_err(), "{len} of {} bytes read", der.len());
        }
    }

    #[test]
    fn times_are_utc_seconds_since_the_epoch() {
        assert_eq!(parse_time(b"700101000000Z", 2), Some(0));
        assert_eq!(parse_time(b"491231235959Z", 2), Some(2_524_607_999));
        assert_eq!(parse_time(b"500101000000Z", 2), Some(-631_152_000));
        assert_eq!(parse_time(b"20000229120000Z", 4), Some(951_825_600));
        assert_eq!(parse_time(b"20300101000000.5Z", 4), Some(1_893_456_000));
        assert_eq!(parse_time(b"21060207062816Z", 4), Some(4_294_967_296));
        for bad in [
            &b"700101000000"[..],
            b"7001010000Z0",
            b"701301000000Z",
            b"70010100000aZ",
            b"700101000000.5Z",
        ] {
            assert_eq!(parse_time(bad, 2), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_time(b"2030010100000Z", 4), None);
    }

    #[test]
    fn names_with_several_attributes_in_one_rdn_and_unknown_types() {
        // SET { CN=a, O=b }, SET { 1.2.3.4 = INTEGER 5 }
        let der = [
            0x31, 0x14, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'a', 0x30, 0x08, 0x06, 0x03,
            0x55, 0x04, 0x0a, 0x13, 0x01, b'b', 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x02,
            0x01, 0x05,
        ];
        assert_eq!(name(Der(&der[..21])), None);
        assert_eq!(name(Der(&der)).as_deref(), Some("CN=a + O=b, 1.2.3.4=05"));
    }
}
