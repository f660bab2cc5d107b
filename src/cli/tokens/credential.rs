//! The `ExecCredential` that both paths print: the version kubectl asks
//! for (`KUBERNETES_EXEC_INFO`), the one-line JSON built by hand (a bearer
//! token needs no escaping; the expiry is formatted without a date
//! library), and the single write of it to stdout.

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;

use crate::local::token_cache;

pub const API_V1: &str = "client.authentication.k8s.io/v1";
pub const API_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// The `ExecCredential` version to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecApi {
    V1,
    V1Beta1,
}

impl ExecApi {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecApi::V1 => API_V1,
            ExecApi::V1Beta1 => API_V1BETA1,
        }
    }

    /// The version `KUBERNETES_EXEC_INFO` asks for: v1 when its top-level
    /// `apiVersion` is `client.authentication.k8s.io/v1`, else (absent,
    /// unparsable, another version) v1beta1.
    pub fn from_exec_info(info: Option<&[u8]>) -> ExecApi {
        #[derive(Deserialize)]
        struct Info<'a> {
            #[serde(rename = "apiVersion", borrow, default)]
            api_version: Option<Cow<'a, str>>,
        }
        match info.and_then(|b| serde_json::from_slice::<Info<'_>>(b).ok()) {
            Some(Info {
                api_version: Some(v),
            }) if v == API_V1 => ExecApi::V1,
            _ => ExecApi::V1Beta1,
        }
    }
}

/// [`ExecApi::from_exec_info`] of this process's `KUBERNETES_EXEC_INFO`.
pub fn api_from_env() -> ExecApi {
    let info = std::env::var_os("KUBERNETES_EXEC_INFO");
    ExecApi::from_exec_info(info.as_ref().map(|v| v.as_encoded_bytes()))
}

/// The `ExecCredential` JSON (one line) for `token`, expiring at Unix time
/// `expires`. `None` when the token is not one (see
/// [`token_cache::is_token`]) or the time is out of RFC 3339's range.
pub fn exec_credential(api: ExecApi, token: &str, expires: i64) -> Option<Vec<u8>> {
    if !token_cache::is_token(token.as_bytes()) {
        return None;
    }
    let ts = rfc3339(expires)?;
    let mut out = Vec::with_capacity(token.len() + 160);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(api.as_str().as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"");
    // A bearer token needs no JSON escaping (checked above).
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(b"\",\"expirationTimestamp\":\"");
    out.extend_from_slice(&ts);
    out.extend_from_slice(b"\"}}\n");
    Some(out)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time from 1970 to 9999.
pub fn rfc3339(t: i64) -> Option<[u8; 20]> {
    if !(0..=253_402_300_799).contains(&t) {
        return None;
    }
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, secs / 3600);
    put(14, 2, secs / 60 % 60);
    put(17, 2, secs % 60);
    Some(out)
}

/// Writes the credential to stdout in one write.
pub(super) fn print(out: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out)?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_info_versions() {
        let v1 = |s: &str| ExecApi::from_exec_info(Some(s.as_bytes()));
        assert_eq!(ExecApi::from_exec_info(None), ExecApi::V1Beta1);
        // client-go's form, with the cluster (provideClusterInfo) after it.
        assert_eq!(
            v1(
                r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"cluster":{"server":"https://x","certificate-authority-data":"TFMw","config":{"apiVersion":"client.authentication.k8s.io/v1beta1"}},"interactive":false}}"#
            ),
            ExecApi::V1
        );
        // The Python client's form (json.dumps: a blank after each colon).
        assert_eq!(
            v1(
                r#"{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "spec": {"interactive": false}}"#
            ),
            ExecApi::V1
        );
        assert_eq!(
            v1("{\n  \"apiVersion\" :\t\"client.authentication.k8s.io/v1\"\n}"),
            ExecApi::V1
        );
        assert_eq!(
            v1(r#"{"apiVersion":"client.authentication.k8s.io\/v1"}"#),
            ExecApi::V1,
            "escaped slash"
        );
        for other in [
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1"}"#,
            // A nested apiVersion is not the credential's.
            r#"{"kind":"ExecCredential","spec":{"cluster":{"config":{"apiVersion":"client.authentication.k8s.io/v1"}}},"apiVersion":"client.authentication.k8s.io/v1beta1"}"#,
            r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#,
            r#"{"apiVersion":"client.authentication.k8s.io/v10"}"#,
            r#"{"apiVersion":"client.authentication.k8s.io/v1"#,
            r#"{"apiVersion":1}"#,
            "",
            "null",
            "not json",
        ] {
            assert_eq!(v1(other), ExecApi::V1Beta1, "{other}");
        }
    }

    #[test]
    fn exec_credential_json() {
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJwcm9kIn0.sig-_";
        for api in [ExecApi::V1, ExecApi::V1Beta1] {
            let out = exec_credential(api, token, 1_795_371_386).unwrap();
            assert_eq!(out.last(), Some(&b'\n'));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                v,
                serde_json::json!({
                    "apiVersion": api.as_str(),
                    "kind": "ExecCredential",
                    "status": {"token": token, "expirationTimestamp": "2026-11-22T18:16:26Z"},
                })
            );
        }
        assert_eq!(exec_credential(ExecApi::V1, "a\"b", 1), None);
        assert_eq!(exec_credential(ExecApi::V1, "", 1), None);
        assert_eq!(exec_credential(ExecApi::V1, "t", -1), None);
    }

    #[test]
    fn rfc3339_matches_the_time_crate() {
        let fmt = time::format_description::well_known::Rfc3339;
        let mut t: i64 = 0;
        let mut samples = vec![
            0,
            59,
            86_399,
            86_400,
            951_782_400, // 2000-02-29
            951_868_799,
            1_795_371_386,
            4_107_542_400, // 2100-03-01
            253_402_300_799,
        ];
        while t < 253_402_300_799 {
            samples.push(t);
            t += 7_777_777 + t / 3;
        }
        for t in samples {
            let ours = rfc3339(t).unwrap();
            let theirs = time::OffsetDateTime::from_unix_timestamp(t)
                .unwrap()
                .format(&fmt)
                .unwrap();
            assert_eq!(std::str::from_utf8(&ours).unwrap(), theirs, "{t}");
        }
        assert_eq!(rfc3339(253_402_300_800), None);
        assert_eq!(rfc3339(-1), None);
    }
}
