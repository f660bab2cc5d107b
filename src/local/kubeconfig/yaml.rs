//! The kubeconfig as a typed YAML tree ([`Yaml`]): every value with its
//! type, mapping keys in their order, so that fields infra does not know
//! survive a rewrite with the same meaning. Parsing reads scalars as
//! kubectl does (YAML 1.1) and checks that the document is a kubeconfig
//! ([`parse`]); writing quotes every string another reader could take for
//! something else ([`to_yaml`]).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A YAML value with its type and the order of mapping keys kept; mapping
/// keys may be any value, as in YAML.
#[derive(Debug, Clone)]
pub(super) enum Yaml {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(Yaml, Yaml)>),
}

impl PartialEq for Yaml {
    fn eq(&self, other: &Yaml) -> bool {
        match (self, other) {
            (Yaml::Null, Yaml::Null) => true,
            (Yaml::Bool(a), Yaml::Bool(b)) => a == b,
            (Yaml::Int(a), Yaml::Int(b)) => a == b,
            // By bits: a NaN is the same value as itself here.
            (Yaml::Float(a), Yaml::Float(b)) => a.to_bits() == b.to_bits(),
            (Yaml::Str(a), Yaml::Str(b)) => a == b,
            (Yaml::Seq(a), Yaml::Seq(b)) => a == b,
            (Yaml::Map(a), Yaml::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Yaml {
    pub(super) fn str(s: &str) -> Yaml {
        Yaml::Str(s.to_string())
    }

    pub(super) fn map<const N: usize>(pairs: [(&str, Yaml); N]) -> Yaml {
        Yaml::Map(pairs.into_iter().map(|(k, v)| (Yaml::str(k), v)).collect())
    }

    pub(super) fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Yaml::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `self[a][b]...` as a string.
    pub(super) fn str_at(&self, keys: &[&str]) -> Option<&str> {
        keys.iter()
            .try_fold(self, |v, k| v.get(k))
            .and_then(Yaml::as_str)
    }
}

impl Serialize for Yaml {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Yaml::Null => s.serialize_unit(),
            Yaml::Bool(b) => s.serialize_bool(*b),
            Yaml::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    s.serialize_i64(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    s.serialize_u64(v)
                } else {
                    s.serialize_i128(*i)
                }
            }
            Yaml::Float(f) => s.serialize_f64(*f),
            Yaml::Str(v) => s.serialize_str(v),
            Yaml::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Yaml::Map(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Yaml, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Yaml, E> {
        i128::try_from(v)
            .map(Yaml::Int)
            .map_err(|_| E::custom("an integer is too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::str(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Yaml, E> {
        String::from_utf8(v.to_vec())
            .map(Yaml::Str)
            .map_err(|_| E::custom("a !!binary value is not UTF-8 text"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Yaml::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Yaml, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = a.next_entry()? {
            pairs.push(pair);
        }
        Ok(Yaml::Map(pairs))
    }
}

/// The lists infra writes into.
pub(super) const LISTS: [&str; 3] = ["clusters", "users", "contexts"];

/// Parses a kubeconfig; empty text (or only comments) is an empty
/// kubeconfig. The error completes "the kubeconfig FILE ...".
pub(super) fn parse(text: &str) -> Result<Yaml, String> {
    // As kubectl reads YAML (YAML 1.1 through go-yaml): `yes`/`on` are
    // booleans, `0123` is octal. Non-finite floats are kept, not refused.
    // No snippets of the file in errors: it may hold credentials.
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        non_finite_float_policy: serde_saphyr::options::NonFiniteFloatPolicy::PassThrough,
        with_snippet: false,
    };
    let doc: Yaml = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| format!("is not valid YAML ({e})"))?;
    let doc = match doc {
        Yaml::Null => Yaml::map([
            ("apiVersion", Yaml::str("v1")),
            ("kind", Yaml::str("Config")),
            ("clusters", Yaml::Seq(vec![])),
            ("contexts", Yaml::Seq(vec![])),
            ("users", Yaml::Seq(vec![])),
            ("preferences", Yaml::Map(vec![])),
        ]),
        Yaml::Map(_) => doc,
        _ => return Err("is not a kubeconfig (it is not a YAML mapping)".into()),
    };
    if let Some(kind) = doc.get("kind")
        && !matches!(kind, Yaml::Null)
        && kind.as_str() != Some("Config")
    {
        return Err("is not a kubeconfig (its kind is not Config)".into());
    }
    for list in LISTS {
        if !matches!(doc.get(list), None | Some(Yaml::Null | Yaml::Seq(_))) {
            return Err(format!("is not a kubeconfig (its {list} are not a list)"));
        }
    }
    Ok(doc)
}

pub(super) fn to_yaml(doc: &Yaml) -> anyhow::Result<String> {
    // No block scalars: every string on one line, escaped where needed.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    Ok(serde_saphyr::to_string_with_options(doc, options)?)
}

pub(super) fn list<'a>(doc: &'a Yaml, key: &str) -> &'a [Yaml] {
    match doc.get(key) {
        Some(Yaml::Seq(items)) => items,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_kubeconfig_is_refused() {
        for (text, want) in [
            ("clusters: [\n", "is not valid YAML"),
            ("- a\n- b\n", "not a YAML mapping"),
            ("kind: Deployment\n", "kind is not Config"),
            ("users: {a: b}\n", "users are not a list"),
            ("a: 1\na: 2\n", "is not valid YAML"),
            ("a: 1\n---\nb: 2\n", "is not valid YAML"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        for ok in [
            "",
            "\n",
            "# nothing yet\n",
            "clusters:\nusers: null\n",
            "{}",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }
}
