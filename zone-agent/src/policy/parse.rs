//! Parse: TOML text → [`Document`], the shape of a policy file with every value checked *on its
//! own* (types, required keys, unknown keys, enum words, CIDR/MAC/port/interface syntax and
//! ranges). Checks that relate values to each other (unique names, zone references, which zone
//! an address is in, limits, the host's interfaces) are `validate`'s.
//!
//! Parsing never stops at the first problem: every problem becomes a located diagnostic, the
//! offending value is left out (or replaced by its obvious fix, such as the canonical network
//! for `10.10.0.1/16`), and the rest of the file is still read, so that one run of
//! `policy check` shows everything that is wrong.
//!
//! `serde` derive with `deny_unknown_fields` would stop at the first unknown key or wrong type,
//! so the file is first read into a generic tree whose nodes remember their byte span
//! ([`Node`]), and the schema is then walked by hand.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::diagnostic::Sink;
use super::types::{
    Action, Criticality, Defaults, Loc, Mac, Mode, PortRange, Protocol, Segment, ZoneIface,
};
use super::validate::{MAX_POLICY_RULES, MAX_POLICY_ZONES};

// === Located TOML tree ===

/// A TOML value with the byte span `toml` reports for it. Tables made implicitly by dotted
/// keys (`a.b = 1`) or by `[a.b]` headers have no span of their own.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub span: Option<Range<usize>>,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    /// Entries in file order.
    Table(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Option<Range<usize>>,
    pub node: Node,
}

impl Value {
    /// What the value is, for "must be X, not Y" messages.
    fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date/time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

// `toml` hands out spans through a private serde protocol: a value deserialized as a struct
// with these names is visited as a map {start, end, value}. `toml::Spanned<T>` speaks it but
// fails outright on the span-less implicit tables above, and datetimes are visited as a
// one-entry map. Speaking the protocol here lets one visitor accept every TOML document.
// These are serde_spanned 0.6's and toml_datetime 0.6's names (what toml 0.8 links);
// `tests::protocol_names_match_the_linked_toml` fails if they ever change.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const SPAN_START: &str = "$__serde_spanned_private_start";
const SPAN_END: &str = "$__serde_spanned_private_end";
const SPAN_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: [&str; 3] = [SPAN_START, SPAN_END, SPAN_VALUE];
const DATETIME_FIELD: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Asking for the span struct makes `toml` wrap the value in its span when it has one.
        d.deserialize_struct(SPANNED, &SPANNED_FIELDS, NodeVisitor)
    }
}

/// The value inside a span wrapper: asked for plainly, or `toml` would wrap it again.
struct Bare(Node);

impl<'de> Deserialize<'de> for Bare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor).map(Bare)
    }
}

struct NodeVisitor;

fn unspanned(value: Value) -> Node {
    Node { span: None, value }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(unspanned(Value::Boolean(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(unspanned(Value::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        // TOML integers are i64; `toml` never produces a larger one.
        i64::try_from(v)
            .map(|v| unspanned(Value::Integer(v)))
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(unspanned(Value::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(unspanned(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(unspanned(Value::String(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(unspanned(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return Ok(unspanned(Value::Table(Vec::new())));
        };
        match first.name.as_str() {
            SPAN_START => {
                let start: usize = map.next_value()?;
                let (span, Bare(mut node)) = span_rest(start, &mut map)?;
                node.span = Some(span);
                Ok(node)
            }
            DATETIME_FIELD => Ok(unspanned(Value::Datetime(map.next_value()?))),
            _ => {
                let mut entries = vec![Entry {
                    key: first.name,
                    key_span: first.span,
                    node: map.next_value()?,
                }];
                while let Some(key) = map.next_key::<Key>()? {
                    entries.push(Entry {
                        key: key.name,
                        key_span: key.span,
                        node: map.next_value()?,
                    });
                }
                Ok(unspanned(Value::Table(entries)))
            }
        }
    }
}

/// Reads `end` and `value` of the span protocol once `start` has been read.
fn span_rest<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    start: usize,
    map: &mut A,
) -> Result<(Range<usize>, T), A::Error> {
    let mut end = None;
    let mut value = None;
    while let Some(key) = map.next_key::<String>()? {
        match key.as_str() {
            SPAN_END => end = Some(map.next_value::<usize>()?),
            SPAN_VALUE => value = Some(map.next_value::<T>()?),
            other => return Err(de::Error::unknown_field(other, &SPANNED_FIELDS)),
        }
    }
    match (end, value) {
        (Some(end), Some(value)) => Ok((start..end, value)),
        (None, _) => Err(de::Error::missing_field(SPAN_END)),
        (_, None) => Err(de::Error::missing_field(SPAN_VALUE)),
    }
}

/// A table key with its span (keys of implicit tables may have none).
struct Key {
    name: String,
    span: Option<Range<usize>>,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, &SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(Key {
            name: v.to_owned(),
            span: None,
        })
    }

    fn visit_string<E>(self, v: String) -> Result<Key, E> {
        Ok(Key {
            name: v,
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        match map.next_key::<String>()? {
            Some(k) if k == SPAN_START => {
                let start: usize = map.next_value()?;
                let (span, name) = span_rest::<_, String>(start, &mut map)?;
                Ok(Key {
                    name,
                    span: Some(span),
                })
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
        }
    }
}

/// The whole file as a located tree, or the TOML syntax error.
pub(crate) fn tree(text: &str) -> Result<Node, toml::de::Error> {
    toml::from_str(text)
}

// === Document: the shape of a policy file ===

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct At<T> {
    pub value: T,
    pub loc: Loc,
}

/// A list-valued key: where its value (the array) starts, and the usable items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct List<T> {
    pub loc: Loc,
    pub items: Vec<At<T>>,
}

// By hand: the derive would require `T: Default`.
impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            loc: Loc::default(),
            items: Vec::new(),
        }
    }
}

impl<T> List<T> {
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map(|i| &i.value)
    }
}

/// A policy file with each value checked on its own. Values that were wrong are left out (their
/// error is already reported); `clean` says whether anything was.
#[derive(Clone, Debug)]
pub(crate) struct Document {
    pub version: u32,
    pub mode: Mode,
    pub defaults: Defaults,
    pub zones: Vec<ZoneDoc>,
    pub rules: Vec<RuleDoc>,
}

#[derive(Clone, Debug)]
pub(crate) struct ZoneDoc {
    /// The `[[zones]]` header (or the inline table).
    pub loc: Loc,
    /// Kept even when its spelling is wrong, so that rules naming it don't fail as well.
    pub name: Option<At<String>>,
    /// How messages name the zone: `zone "lgwan"`, or `zone #2` without a usable name.
    pub what: String,
    pub label: Option<String>,
    /// With the zone's `vlan` applied to interfaces that have no `.N` suffix.
    pub interfaces: List<ZoneIface>,
    pub networks: List<IpNet>,
    /// No network was left out: the zone's address space is known exactly.
    pub networks_complete: bool,
    pub criticality: Criticality,
    pub segment: Option<At<Segment>>,
}

#[derive(Clone, Debug)]
pub(crate) struct RuleDoc {
    /// The `[[rules]]` header (or the inline table).
    pub loc: Loc,
    pub name: Option<At<String>>,
    /// `rule "eltax-relay"`, or `rule #3` without a usable name.
    pub what: String,
    pub description: Option<String>,
    pub from: Option<At<String>>,
    pub to: Option<At<String>>,
    pub protocol: Option<At<Protocol>>,
    pub ports: List<PortRange>,
    pub sources: List<IpNet>,
    pub source_macs: List<Mac>,
    pub destinations: List<IpNet>,
    pub mode: Mode,
    /// The operator's reason for accepting the guideline lint's findings (never empty).
    pub acknowledge: Option<At<String>>,
    /// Nothing in this rule was wrong (so it may be compared with others).
    pub clean: bool,
}

/// Top-level and table keys, in the order the help text lists them.
const TOP_KEYS: &[&str] = &["version", "mode", "defaults", "zones", "rules"];
const DEFAULTS_KEYS: &[&str] = &["intra_zone", "unknown", "fragments"];
const ZONE_KEYS: &[&str] = &[
    "name",
    "label",
    "interfaces",
    "vlan",
    "networks",
    "criticality",
    "segment",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "description",
    "from",
    "to",
    "protocol",
    "ports",
    "sources",
    "source_macs",
    "destinations",
    "mode",
    "acknowledge",
];

const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("audit", Mode::Audit)];
const ACTIONS: &[(&str, Action)] = &[("allow", Action::Allow), ("deny", Action::Deny)];
const CRITICALITIES: &[(&str, Criticality)] = &[
    ("low", Criticality::Low),
    ("medium", Criticality::Medium),
    ("high", Criticality::High),
    ("critical", Criticality::Critical),
];
const SEGMENTS: &[(&str, Segment)] = &[
    ("mynumber", Segment::Mynumber),
    ("lgwan", Segment::Lgwan),
    ("internet", Segment::Internet),
    ("other", Segment::Other),
];
const PROTOCOLS: &[(&str, Protocol)] = &[
    ("tcp", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("icmp", Protocol::Icmp),
    ("icmpv6", Protocol::Icmpv6),
    ("any", Protocol::Any),
];

/// Longest zone name: it becomes a Prometheus label value and part of alert text.
pub(crate) const ZONE_NAME_MAX: usize = 32;
/// Longest rule name: it becomes a Prometheus label value.
pub(crate) const RULE_NAME_MAX: usize = 64;
/// Longest Linux interface name (`IFNAMSIZ` - 1).
const IFNAME_MAX: usize = 15;

/// A line of valid TOML for `key`, shown in help text for missing or mistyped keys.
fn example(key: &str) -> &'static str {
    match key {
        "version" => "version = 1",
        "mode" => "mode = \"enforce\"",
        "defaults" => {
            "[defaults] with intra_zone = \"allow\", unknown = \"deny\", fragments = \"deny\""
        }
        "intra_zone" => "intra_zone = \"allow\"",
        "unknown" => "unknown = \"deny\"",
        "fragments" => "fragments = \"deny\"",
        "zones" => "one [[zones]] table per zone, with name, interfaces and networks",
        "rules" => "one [[rules]] table per rule, with name, from, to and protocol",
        "name" => "name = \"lgwan\"",
        "label" => "label = \"LGWAN接続系\"",
        "interfaces" => "interfaces = [\"eth1\", \"eth2.100\"]",
        "vlan" => "vlan = 100",
        "networks" => "networks = [\"10.20.0.0/16\", \"fd20::/48\"]",
        "criticality" => "criticality = \"high\"",
        "segment" => "segment = \"lgwan\"",
        "description" => "description = \"LGWAN relay -> 中間サーバー import\"",
        "from" => "from = \"lgwan\"",
        "to" => "to = \"mynumber\"",
        "protocol" => "protocol = \"tcp\"",
        "ports" => "ports = [\"443\", \"8000-8010\"]",
        "sources" => "sources = [\"10.20.5.10/32\"]",
        "source_macs" => "source_macs = [\"52:54:00:12:34:56\"]",
        "destinations" => "destinations = [\"10.10.9.20/32\"]",
        "acknowledge" => {
            "acknowledge = \"approved by the CISO on 2025-04-01: vendor maintenance, see ticket 123\""
        }
        _ => "see the policy file format in the documentation",
    }
}

/// Reads `text` into a [`Document`], reporting every problem to `sink`. `None` only when the
/// text is not TOML at all (the syntax error is reported).
pub(crate) fn document(text: &str, sink: &mut Sink<'_>) -> Option<Document> {
    // A file of a million `[[rules]]` headers is refused before the TOML parser builds a tree
    // of a million tables (seconds and hundreds of MB): the headers are counted first.
    let headers = count_headers(text);
    let zones_fit = headers.zones.count <= MAX_POLICY_ZONES;
    if let (false, Some(at)) = (zones_fit, headers.zones.extra) {
        let (message, help) = too_many_zones(headers.zones.count);
        sink.error(sink.loc(at), message, help);
    }
    let rules_fit = headers.rules.count <= MAX_POLICY_RULES;
    if let (false, Some(at)) = (rules_fit, headers.rules.extra) {
        let (message, help) = too_many_rules(headers.rules.count);
        sink.error(sink.loc(at), message, help);
    }
    if !(zones_fit && rules_fit) {
        return None;
    }
    let root = match tree(text) {
        Ok(root) => root,
        Err(e) => {
            let loc = sink.loc(e.span().map_or(0, |s| s.start));
            sink.error(
                loc,
                // toml's messages may span lines; a diagnostic is one line plus its help.
                format!("invalid TOML: {}", e.message().trim_end().replace('\n', "; ")),
                "fix the syntax here: strings need double quotes, lists are written [\"a\", \"b\"], \
                 each key may appear once per table, and each zone or rule starts with [[zones]] or [[rules]]",
            );
            return None;
        }
    };
    let entries = match &root.value {
        Value::Table(entries) => entries.as_slice(),
        // A TOML document is always a table.
        _ => &[],
    };
    let top = Table::new(
        entries,
        Loc { line: 1, col: 1 },
        "the top level".to_owned(),
        "the top level",
        TOP_KEYS,
    );
    top.check_keys(sink);
    // Capacity first, before any zone or rule is read: a policy beyond the data path's limits
    // is refused with one error, in time and memory bounded by the file's size, instead of
    // after a diagnostic per table, validation's duplicate search and the lint.
    // Tables written in ways `count_headers` does not see (inline arrays, quoted keys).
    let zones_fit = top.within_capacity("zones", MAX_POLICY_ZONES, too_many_zones, sink);
    let rules_fit = top.within_capacity("rules", MAX_POLICY_RULES, too_many_rules, sink);
    if !(zones_fit && rules_fit) {
        return None;
    }

    let version = top.version(sink);
    let mode = top
        .choice("mode", MODES, false, sink)
        .map_or(Mode::Enforce, |m| m.value);
    let defaults = match top.table("defaults", false, sink) {
        Some(t) => t.defaults(sink),
        None => Defaults::default(),
    };
    let zones = top
        .table_list("zones", true, sink)
        .into_iter()
        .enumerate()
        .map(|(i, (loc, entries))| zone(i, loc, entries, sink))
        .collect();
    let rules = top
        .table_list("rules", false, sink)
        .into_iter()
        .enumerate()
        .map(|(i, (loc, entries))| rule(i, loc, entries, sink))
        .collect();
    Some(Document {
        version,
        mode,
        defaults,
        zones,
        rules,
    })
}

fn too_many_zones(n: usize) -> (String, &'static str) {
    (
        format!("too many zones: {n} defined, the data path supports at most {MAX_POLICY_ZONES}"),
        "zone ids are one byte in the data path (0 means \"no zone\"); merge zones that share a policy",
    )
}

fn too_many_rules(n: usize) -> (String, &'static str) {
    (
        format!("map capacity exceeded: {n} rules, the data path holds at most {MAX_POLICY_RULES}"),
        "merge rules between the same zones with the same protocol: one rule may list several \
         ports, sources and destinations",
    )
}

/// How many `[[key]]` headers a file has, and where the one beyond the limit starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct HeaderCount {
    count: usize,
    /// Byte offset of the header after the first `limit` ones.
    extra: Option<usize>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Headers {
    zones: HeaderCount,
    rules: HeaderCount,
}

/// Counts the `[[zones]]` and `[[rules]]` headers of `text` without parsing it: lines that
/// begin (after blanks) with such a header and are not inside a multi-line string. A header
/// spelled otherwise (`[["rules"]]`) is not counted; the count of the parsed tables catches
/// what this misses, so it never finds more tables than there are.
fn count_headers(text: &str) -> Headers {
    let mut headers = Headers::default();
    let mut open: Option<&'static [u8]> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let b = line.as_bytes();
        let from = match open {
            Some(delim) => match close_multiline(b, 0, delim) {
                Some(after) => after,
                None => continue,
            },
            None => {
                let blanks = b.iter().take_while(|c| matches!(c, b' ' | b'\t')).count();
                let name = line[blanks..]
                    .strip_prefix("[[")
                    .and_then(|h| h.split_once("]]"))
                    .map(|(name, _)| name.trim_matches([' ', '\t']));
                let counted = match name {
                    Some("zones") => Some((&mut headers.zones, MAX_POLICY_ZONES)),
                    Some("rules") => Some((&mut headers.rules, MAX_POLICY_RULES)),
                    _ => None,
                };
                if let Some((slot, limit)) = counted {
                    slot.count += 1;
                    if slot.count == limit + 1 {
                        slot.extra = Some(start + blanks);
                    }
                }
                0
            }
        };
        open = open_multiline(b, from);
    }
    headers
}

const ML_BASIC: &[u8] = b"\"\"\"";
const ML_LITERAL: &[u8] = b"'''";

/// The delimiter of a multi-line string that `b` (from `i` on, outside any string there)
/// leaves open, if any.
fn open_multiline(b: &[u8], mut i: usize) -> Option<&'static [u8]> {
    while i < b.len() {
        if let Some(delim) = [ML_BASIC, ML_LITERAL]
            .into_iter()
            .find(|d| b[i..].starts_with(d))
        {
            match close_multiline(b, i + delim.len(), delim) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => return Some(delim),
            }
        }
        match b[i] {
            b'#' => return None,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'\'' => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Where a multi-line string that is open at `b[i]` ends (the index after its delimiter), or
/// `None` if it does not end in `b`.
fn close_multiline(b: &[u8], mut i: usize, delim: &[u8]) -> Option<usize> {
    let quote = delim[0];
    while i < b.len() {
        if quote == b'"' && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i..].starts_with(delim) {
            // Up to two more quotes may end the string's content: `""""` is `"` and the end.
            let mut end = i + delim.len();
            while end < b.len() && end < i + delim.len() + 2 && b[end] == quote {
                end += 1;
            }
            return Some(end);
        }
        i += 1;
    }
    None
}

fn zone(index: usize, loc: Loc, entries: &[Entry], sink: &mut Sink<'_>) -> ZoneDoc {
    // The name first: every later message about this zone uses it.
    let what = match peek_name(entries) {
        Some(name) => format!("zone \"{name}\""),
        None => format!("zone #{}", index + 1),
    };
    let t = Table::new(entries, loc, what.clone(), "a zone", ZONE_KEYS);
    t.check_keys(sink);

    let name = t.string("name", true, sink);
    if let Some(n) = &name {
        check_zone_name(n, sink);
    }
    let label = t.string("label", false, sink).map(|l| l.value);
    let vlan = t
        .integer("vlan", sink)
        .and_then(|v| match u16::try_from(v.value) {
            Ok(id) if (1..=4094).contains(&id) => Some(id),
            _ => {
                sink.error(
                    v.loc,
                    format!("VLAN {} out of range in {what} field `vlan`", v.value),
                    "802.1Q VLAN ids are 1..4094",
                );
                None
            }
        });

    let interfaces = t.list("interfaces", true, "strings", sink, |v| {
        text(v).map(interface)
    });
    let interfaces = List {
        loc: interfaces.loc,
        items: interfaces
            .items
            .into_iter()
            .map(
                |At {
                     value: (name, tag),
                     loc,
                 }| At {
                    // An explicit ".N" suffix names its own VLAN; the zone's `vlan` fills in for
                    // plain names only.
                    value: ZoneIface {
                        name,
                        vlan: tag.or(vlan),
                        loc,
                    },
                    loc,
                },
            )
            .collect(),
    };
    // `10.10.0.1/16` evidently means 10.10.0.0/16: kept (and reported) so that the zone's
    // address space stays known. Otherwise a bad network leaves it unknown.
    let (networks, networks_complete) = t.list_fixing(
        "networks",
        true,
        "strings",
        sink,
        |v| text(v).map(cidr),
        |p| p.canonical,
    );

    let criticality = t
        .choice("criticality", CRITICALITIES, false, sink)
        .map_or(Criticality::Medium, |c| c.value);
    let segment = t.choice("segment", SEGMENTS, false, sink);
    ZoneDoc {
        loc,
        name,
        what,
        label,
        interfaces,
        networks,
        networks_complete,
        criticality,
        segment,
    }
}

fn rule(index: usize, loc: Loc, entries: &[Entry], sink: &mut Sink<'_>) -> RuleDoc {
    let errors_before = sink.error_count();
    let what = match peek_name(entries) {
        Some(name) => format!("rule \"{name}\""),
        None => format!("rule #{}", index + 1),
    };
    let t = Table::new(entries, loc, what.clone(), "a rule", RULE_KEYS);
    t.check_keys(sink);

    let name = t.string("name", true, sink);
    if let Some(n) = &name {
        check_rule_name(n, sink);
    }
    let description = t.string("description", false, sink).map(|d| d.value);
    let from = t.string("from", true, sink);
    let to = t.string("to", true, sink);
    let protocol = t.choice("protocol", PROTOCOLS, true, sink);

    let ports = t.list(
        "ports",
        false,
        "port strings or integers",
        sink,
        |v| match v {
            Value::String(s) => Some(port_range(s)),
            Value::Integer(n) => Some(port(*n, &n.to_string()).map(|p| PortRange { lo: p, hi: p })),
            _ => None,
        },
    );
    let sources = t.list("sources", false, "strings", sink, |v| text(v).map(cidr));
    let destinations = t.list("destinations", false, "strings", sink, |v| {
        text(v).map(cidr)
    });
    let source_macs = t.list("source_macs", false, "strings", sink, |v| text(v).map(mac));

    let mode = t
        .choice("mode", MODES, false, sink)
        .map_or(Mode::Enforce, |m| m.value);
    // An acknowledgement is a record of a decision: without a reason it records nothing.
    let acknowledge = t.string("acknowledge", false, sink).filter(|a| {
        let said = !a.value.trim().is_empty();
        if !said {
            sink.error(
                a.loc,
                format!("`acknowledge` in {what} is empty"),
                "say why the guideline finding is accepted, who decided and where it is recorded, \
                 for example: acknowledge = \"approved by the CISO on 2025-04-01, ticket 123\"; \
                 or remove `acknowledge`",
            );
        }
        said
    });
    let clean = sink.error_count() == errors_before;
    RuleDoc {
        loc,
        name,
        what,
        description,
        from,
        to,
        protocol,
        ports,
        sources,
        source_macs,
        destinations,
        mode,
        acknowledge,
        clean,
    }
}

/// A table's `name`, when it is a non-empty string, to name the table in messages.
fn peek_name(entries: &[Entry]) -> Option<&str> {
    entries
        .iter()
        .find(|e| e.key == "name")
        .and_then(|e| match &e.node.value {
            Value::String(s) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
}

fn check_zone_name(name: &At<String>, sink: &mut Sink<'_>) {
    let n = &name.value;
    let help = "zone names are short lower-case words such as \"mynumber\" or \"lgwan\" \
                (a-z, 0-9, '_' and '-'); put display text in `label`";
    if n.is_empty() {
        sink.error(name.loc, "zone name must not be empty", help);
    } else if n.chars().count() > ZONE_NAME_MAX {
        sink.error(
            name.loc,
            format!("zone name \"{n}\" is longer than {ZONE_NAME_MAX} characters"),
            help,
        );
    } else if let Some(c) = n
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        sink.error(name.loc, format!("zone name \"{n}\" contains {c:?}"), help);
    } else if zone_agent_common::RESERVED_ZONE_NAMES.contains(&n.as_str()) {
        sink.error(
            name.loc,
            format!("zone name \"{n}\" is reserved"),
            format!(
                "\"{n}\" is what metrics and reports call traffic in no zone; choose another name \
                 (reserved: {})",
                zone_agent_common::RESERVED_ZONE_NAMES.join(", ")
            ),
        );
    }
}

fn check_rule_name(name: &At<String>, sink: &mut Sink<'_>) {
    let n = &name.value;
    let help = "rule names are short identifiers such as \"eltax-relay\" \
                (A-Z, a-z, 0-9, '_', '.' and '-'); put free text in `description`";
    if n.is_empty() {
        sink.error(name.loc, "rule name must not be empty", help);
    } else if n.chars().count() > RULE_NAME_MAX {
        sink.error(
            name.loc,
            format!("rule name \"{n}\" is longer than {RULE_NAME_MAX} characters"),
            help,
        );
    } else if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        sink.error(name.loc, format!("rule name \"{n}\" contains {c:?}"), help);
    }
}

/// One table of the file being read: its entries, where it starts, how messages name it, and
/// which keys it may have.
#[derive(Clone, Debug)]
struct Table<'n> {
    entries: &'n [Entry],
    loc: Loc,
    /// "zone \"lgwan\"", "rule #3", "[defaults]", "the top level".
    what: String,
    /// "a zone", "a rule", ... (for the list of allowed keys).
    kind: &'static str,
    allowed: &'static [&'static str],
}

impl<'n> Table<'n> {
    fn new(
        entries: &'n [Entry],
        loc: Loc,
        what: String,
        kind: &'static str,
        allowed: &'static [&'static str],
    ) -> Self {
        Table {
            entries,
            loc,
            what,
            kind,
            allowed,
        }
    }

    /// The location of a value, falling back to its key and then to the table (implicit
    /// tables have no span of their own).
    fn loc_of(&self, span: &Option<Range<usize>>, fallback: Loc, sink: &Sink<'_>) -> Loc {
        span.as_ref().map_or(fallback, |s| sink.loc(s.start))
    }

    fn entry(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn value_loc(&self, e: &Entry, sink: &Sink<'_>) -> Loc {
        let key_loc = self.loc_of(&e.key_span, self.loc, sink);
        self.loc_of(&e.node.span, key_loc, sink)
    }

    fn check_keys(&self, sink: &mut Sink<'_>) {
        for e in self.entries {
            if !self.allowed.contains(&e.key.as_str()) {
                let loc = self.loc_of(&e.key_span, self.value_loc(e, sink), sink);
                sink.error(
                    loc,
                    format!("unknown key `{}` in {}", e.key, self.what),
                    format!(
                        "allowed keys in {} are: {}",
                        self.kind,
                        self.allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// The entry for `key`, reporting it when required and absent.
    fn get(&self, key: &str, required: bool, sink: &mut Sink<'_>) -> Option<&'n Entry> {
        let e = self.entry(key);
        if e.is_none() && required {
            sink.error(
                self.loc,
                format!("missing key `{key}` in {}", self.what),
                format!("add it, for example: {}", example(key)),
            );
        }
        e
    }

    fn wrong_type(&self, e: &Entry, expected: &str, sink: &mut Sink<'_>) {
        let loc = self.value_loc(e, sink);
        sink.error(
            loc,
            format!(
                "`{}` in {} must be {expected}, not {}",
                e.key,
                self.what,
                e.node.value.kind()
            ),
            format!("for example: {}", example(&e.key)),
        );
    }

    fn string(&self, key: &str, required: bool, sink: &mut Sink<'_>) -> Option<At<String>> {
        let e = self.get(key, required, sink)?;
        match &e.node.value {
            Value::String(s) => Some(At {
                value: s.clone(),
                loc: self.value_loc(e, sink),
            }),
            _ => {
                self.wrong_type(e, "a string", sink);
                None
            }
        }
    }

    fn integer(&self, key: &str, sink: &mut Sink<'_>) -> Option<At<i64>> {
        let e = self.get(key, false, sink)?;
        match &e.node.value {
            Value::Integer(n) => Some(At {
                value: *n,
                loc: self.value_loc(e, sink),
            }),
            _ => {
                self.wrong_type(e, "an integer", sink);
                None
            }
        }
    }

    /// A string that must be one of a few words (`mode`, `protocol`, ...).
    fn choice<T: Copy>(
        &self,
        key: &str,
        words: &[(&str, T)],
        required: bool,
        sink: &mut Sink<'_>,
    ) -> Option<At<T>> {
        let s = self.string(key, required, sink)?;
        match words.iter().find(|(w, _)| *w == s.value) {
            Some((_, v)) => Some(At {
                value: *v,
                loc: s.loc,
            }),
            None => {
                let list: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                sink.error(
                    s.loc,
                    format!("invalid `{key}` value \"{}\" in {}", s.value, self.what),
                    format!("`{key}` must be one of: {}", list.join(", ")),
                );
                None
            }
        }
    }

    fn version(&self, sink: &mut Sink<'_>) -> u32 {
        let Some(e) = self.get("version", true, sink) else {
            return 1;
        };
        let loc = self.value_loc(e, sink);
        match &e.node.value {
            Value::Integer(1) => {}
            Value::Integer(n) => sink.error(
                loc,
                format!("unsupported policy version {n}"),
                "this zone-agent reads policy files with version = 1",
            ),
            _ => self.wrong_type(e, "an integer", sink),
        }
        // Checking goes on as version 1 either way; a wrong version is already an error.
        1
    }

    /// A sub-table such as `[defaults]`.
    fn table(&self, key: &str, required: bool, sink: &mut Sink<'_>) -> Option<Table<'n>> {
        let e = self.get(key, required, sink)?;
        match &e.node.value {
            Value::Table(entries) => Some(Table::new(
                entries,
                self.value_loc(e, sink),
                format!("[{key}]"),
                "[defaults]",
                DEFAULTS_KEYS,
            )),
            _ => {
                self.wrong_type(e, "a table", sink);
                None
            }
        }
    }

    fn defaults(&self, sink: &mut Sink<'_>) -> Defaults {
        self.check_keys(sink);
        let d = Defaults::default();
        let mut get = |key, default| {
            self.choice(key, ACTIONS, false, sink)
                .map_or(default, |a| a.value)
        };
        Defaults {
            intra_zone: get("intra_zone", d.intra_zone),
            unknown: get("unknown", d.unknown),
            fragments: get("fragments", d.fragments),
        }
    }

    /// An array of tables such as `[[zones]]`: each table's location and entries.
    /// Whether array `key` has at most `max` items; if not, the error (made by `message` from
    /// the count) is reported at the first item too many.
    fn within_capacity(
        &self,
        key: &str,
        max: usize,
        diagnostic: fn(usize) -> (String, &'static str),
        sink: &mut Sink<'_>,
    ) -> bool {
        let Some(e) = self.entries.iter().find(|e| e.key == key) else {
            return true;
        };
        let Value::Array(items) = &e.node.value else {
            return true;
        };
        let Some(extra) = items.get(max) else {
            return true;
        };
        let loc = self.loc_of(&extra.span, self.value_loc(e, sink), sink);
        let (message, help) = diagnostic(items.len());
        sink.error(loc, message, help);
        false
    }

    fn table_list(
        &self,
        key: &str,
        required: bool,
        sink: &mut Sink<'_>,
    ) -> Vec<(Loc, &'n [Entry])> {
        let Some(e) = self.get(key, required, sink) else {
            return Vec::new();
        };
        let loc = self.value_loc(e, sink);
        let Value::Array(items) = &e.node.value else {
            sink.error(
                loc,
                format!(
                    "`{key}` must be an array of tables, not {}",
                    e.node.value.kind()
                ),
                format!("write each entry under its own [[{key}]] header"),
            );
            return Vec::new();
        };
        if items.is_empty() && required {
            sink.error(
                loc,
                format!("`{key}` must not be empty"),
                format!("add {}", example(key)),
            );
        }
        let mut tables = Vec::new();
        for item in items {
            let item_loc = self.loc_of(&item.span, loc, sink);
            match &item.value {
                Value::Table(entries) => tables.push((item_loc, entries.as_slice())),
                other => sink.error(
                    item_loc,
                    format!("items of `{key}` must be tables, not {}", other.kind()),
                    format!("write each entry under its own [[{key}]] header"),
                ),
            }
        }
        tables
    }

    /// The items of array `key`, each read by `item` and kept with its location. `item` returns
    /// `None` for an item of the wrong type (reported as not being `expected`); a [`Problem`] is
    /// reported where the item is. Required lists must also be non-empty.
    fn list<T>(
        &self,
        key: &str,
        required: bool,
        expected: &str,
        sink: &mut Sink<'_>,
        item: impl Fn(&Value) -> Option<Result<T, Problem>>,
    ) -> List<T> {
        self.list_fixing(key, required, expected, sink, item, |_| None)
            .0
    }

    /// [`Table::list`] that keeps `fix(problem)` in place of a bad item when there is an evident
    /// fix, so that later checks stay meaningful. Also says whether every item was usable.
    fn list_fixing<T>(
        &self,
        key: &str,
        required: bool,
        expected: &str,
        sink: &mut Sink<'_>,
        item: impl Fn(&Value) -> Option<Result<T, Problem>>,
        fix: impl Fn(&Problem) -> Option<T>,
    ) -> (List<T>, bool) {
        let mut list = List::default();
        let Some(e) = self.get(key, required, sink) else {
            return (list, !required);
        };
        list.loc = self.value_loc(e, sink);
        let Value::Array(nodes) = &e.node.value else {
            self.wrong_type(e, "an array", sink);
            return (list, false);
        };
        if nodes.is_empty() && required {
            sink.error(
                list.loc,
                format!("`{key}` in {} must not be empty", self.what),
                format!("list at least one, for example: {}", example(key)),
            );
        }
        let mut complete = true;
        for node in nodes {
            let loc = self.loc_of(&node.span, list.loc, sink);
            let problem = match item(&node.value) {
                Some(Ok(value)) => {
                    list.items.push(At { value, loc });
                    continue;
                }
                Some(Err(problem)) => problem,
                None => {
                    sink.error(
                        loc,
                        format!(
                            "items of `{key}` in {} must be {expected}, not {}",
                            self.what,
                            node.value.kind()
                        ),
                        format!("for example: {}", example(key)),
                    );
                    complete = false;
                    continue;
                }
            };
            match fix(&problem) {
                Some(value) => list.items.push(At { value, loc }),
                None => complete = false,
            }
            sink.error(
                loc,
                format!("{} in {} field `{key}`", problem.message, self.what),
                problem.help,
            );
        }
        (list, complete)
    }
}

/// The text of a string item (`None` for other types).
fn text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

// === Single values ===

/// Why one value is wrong. `canonical` is the network the user evidently meant, when there is
/// one (a network with host bits set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub message: String,
    pub help: String,
    pub canonical: Option<IpNet>,
}

fn problem(message: impl Into<String>, help: impl Into<String>) -> Problem {
    Problem {
        message: message.into(),
        help: help.into(),
        canonical: None,
    }
}

/// `"10.10.0.0/16"`, `"fd10::/48"`: a network written with its prefix length and without host
/// bits, so that what is written is exactly what is matched.
pub(crate) fn cidr(s: &str) -> Result<IpNet, Problem> {
    if let Ok(net) = s.parse::<IpNet>() {
        let canonical = net.trunc();
        if canonical == net {
            return Ok(net);
        }
        return Err(Problem {
            message: format!("\"{s}\" has host bits set"),
            help: format!(
                "write the network as \"{canonical}\" (or use a longer prefix to mean fewer addresses)"
            ),
            canonical: Some(canonical),
        });
    }
    let example = "write an IPv4 or IPv6 network such as \"10.10.0.0/16\", \"10.20.5.10/32\" or \"fd10::/48\"";
    if let Ok(addr) = s.parse::<IpAddr>() {
        let host = if addr.is_ipv4() { 32 } else { 128 };
        return Err(problem(
            format!("\"{s}\" has no prefix length"),
            format!("write \"{s}/{host}\" for this one address"),
        ));
    }
    if let Some((addr, len)) = s.split_once('/')
        && let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u32>())
    {
        let (family, max) = if addr.is_ipv4() {
            ("IPv4", 32)
        } else {
            ("IPv6", 128)
        };
        if len > max {
            return Err(problem(
                format!("prefix length of \"{s}\" is out of range"),
                format!("an {family} prefix length is 0..{max}"),
            ));
        }
    }
    Err(problem(format!("invalid CIDR \"{s}\""), example))
}

/// `"eth1"` or `"eth1.100"` (interface eth1, outer VLAN tag 100).
pub(crate) fn interface(s: &str) -> Result<(String, Option<u16>), Problem> {
    let (name, vlan) = match s.rsplit_once('.') {
        Some((base, tag)) if !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit()) => {
            let id = tag.parse::<u16>().ok().filter(|id| (1..=4094).contains(id));
            match id {
                Some(id) => (base, Some(id)),
                None => {
                    return Err(problem(
                        format!("VLAN {tag} of \"{s}\" is out of range"),
                        "802.1Q VLAN ids are 1..4094; write \"eth1.100\" for VLAN 100 on eth1",
                    ));
                }
            }
        }
        _ => (s, None),
    };
    let bad = name.is_empty()
        || name.len() > IFNAME_MAX
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(problem(
            format!("invalid interface name \"{s}\""),
            "a Linux interface name is 1 to 15 bytes without '/', ':' or spaces; \
             write \"eth1\", or \"eth1.100\" for VLAN 100 on eth1",
        ));
    }
    Ok((name.to_owned(), vlan))
}

const PORT_HELP: &str =
    "ports are 1..65535; write a port such as \"443\" or a range such as \"8000-8010\"";

fn port(n: i64, text: &str) -> Result<u16, Problem> {
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(problem(format!("port out of range: {text}"), PORT_HELP)),
    }
}

fn port_number(s: &str, whole: &str) -> Result<u16, Problem> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(problem(format!("invalid port \"{whole}\""), PORT_HELP));
    }
    // Only digits: the parse fails only on overflow, which is out of range too.
    port(s.parse::<i64>().unwrap_or(i64::MAX), s)
}

/// `"443"` or `"8000-8010"` (inclusive).
pub(crate) fn port_range(s: &str) -> Result<PortRange, Problem> {
    match s.split_once('-') {
        None => port_number(s, s).map(|p| PortRange { lo: p, hi: p }),
        Some((lo, hi)) => {
            let (lo, hi) = (port_number(lo, s)?, port_number(hi, s)?);
            if lo > hi {
                return Err(problem(
                    format!("port range \"{s}\" is reversed"),
                    format!("write the lower port first: \"{hi}-{lo}\""),
                ));
            }
            Ok(PortRange { lo, hi })
        }
    }
}

/// `"52:54:00:12:34:56"` or `"52-54-00-12-34-56"`, any case: a unicast source address.
pub(crate) fn mac(s: &str) -> Result<Mac, Problem> {
    let syntax = || {
        problem(
            format!("invalid MAC address \"{s}\""),
            "write six hex bytes such as \"52:54:00:12:34:56\" (or with '-' between them)",
        )
    };
    let sep = if s.contains('-') { '-' } else { ':' };
    let mut out = [0u8; 6];
    let mut parts = s.split(sep);
    for byte in &mut out {
        let part = parts.next().ok_or_else(syntax)?;
        // Checked by hand: `from_str_radix` would also take "+f".
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(syntax());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
    }
    if parts.next().is_some() {
        return Err(syntax());
    }
    let why = if out == [0; 6] {
        Some("the all-zero MAC address")
    } else if out == [0xff; 6] {
        Some("the broadcast MAC address")
    } else if out[0] & 1 == 1 {
        // The I/G bit: group addresses are destinations only.
        Some("a multicast MAC address")
    } else {
        None
    };
    match why {
        Some(why) => Err(problem(
            format!("\"{s}\" is {why}, not a source address"),
            "list the unicast MAC of the sending host (see `ip link` on it)",
        )),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::path::Path;

    #[test]
    fn headers_are_counted_outside_strings_only() {
        let text = "version = 1\n[[zones]]\nname = \"a\" # [[zones]]\n  [[ rules ]]\n\
            description = \"\"\"\n[[rules]]\n\\\"\"\" still open\n[[rules]]\n\"\"\"\"\n\
            acknowledge = '''x\n[[rules]]'''  [[rules]]\n[[rules]] # real\n\
            label = \"ends \\\" here\" s = '''\n[[zones]]\n'''\n[[\"rules\"]]\n[[rules.x]]\n";
        let h = count_headers(text);
        assert_eq!((h.zones.count, h.rules.count), (1, 2), "{h:?}");
        // The rule line after the strings closed is seen; none inside them.
        let mut big = String::from("version = 1\n");
        for _ in 0..=MAX_POLICY_RULES {
            big.push_str("[[rules]]\n");
        }
        let h = count_headers(&big);
        assert_eq!(h.rules.count, MAX_POLICY_RULES + 1);
        assert_eq!(h.rules.extra, Some(12 + 10 * MAX_POLICY_RULES));
        assert_eq!(count_headers("[[rules]]\n").rules.extra, None);
    }

    type Names = Option<(&'static str, &'static [&'static str])>;

    /// A deserializer that records the struct name and fields it is asked for, to learn the
    /// private names `toml`'s span and datetime types use.
    struct Probe<'a>(&'a Cell<Names>);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(Some((name, fields)));
            Err(de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    #[test]
    fn protocol_names_match_the_linked_toml() {
        let seen = Cell::new(None);
        let _ = toml::Spanned::<String>::deserialize(Probe(&seen));
        assert_eq!(seen.get(), Some((SPANNED, &SPANNED_FIELDS[..])));
        let seen = Cell::new(None);
        let _ = toml::value::Datetime::deserialize(Probe(&seen));
        assert_eq!(
            seen.get().map(|(_, fields)| fields),
            Some(&[DATETIME_FIELD][..])
        );
    }

    fn span_text<'t>(text: &'t str, node: &Node) -> &'t str {
        node.span.clone().map_or("", |s| &text[s])
    }

    #[test]
    fn tree_keeps_spans_of_values_keys_and_tables() {
        let text = "version = 1\n[[zones]]\nname = \"a\"\nnets = [\"10.0.0.0/8\", 3]\nx.y = 2\nt = 1979-05-27\n";
        let root = tree(text).expect("valid TOML");
        let Value::Table(top) = &root.value else {
            panic!("root is a table")
        };
        assert_eq!(top[0].key, "version");
        assert_eq!(span_text(text, &top[0].node), "1");
        let Value::Array(zones) = &top[1].node.value else {
            panic!("zones is an array")
        };
        assert!(span_text(text, &zones[0]).starts_with("[[zones]]"));
        let Value::Table(zone) = &zones[0].value else {
            panic!("zone is a table")
        };
        let keys: Vec<&str> = zone.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["name", "nets", "x", "t"]);
        assert_eq!(zone[0].key_span.clone().map(|s| &text[s]), Some("name"));
        let Value::Array(nets) = &zone[1].node.value else {
            panic!("nets is an array")
        };
        assert_eq!(span_text(text, &nets[1]), "3");
        assert_eq!(nets[1].value, Value::Integer(3));
        // A dotted key makes a table without a span; its key still has one.
        assert_eq!(zone[2].node.span, None);
        assert!(zone[2].key_span.is_some());
        assert_eq!(zone[3].node.value, Value::Datetime("1979-05-27".into()));
    }

    fn parse(text: &str) -> (Option<Document>, Vec<String>) {
        let mut sink = Sink::new(Path::new("p.toml"), text);
        let doc = document(text, &mut sink);
        let diags = sink
            .reject()
            .0
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.col, d.message))
            .collect();
        (doc, diags)
    }

    #[test]
    fn document_reports_every_shape_problem() {
        let text = "version = \"1\"\nmode = \"block\"\ncolour = 1\n\
                    [[zones]]\nname = \"a\"\ninterfaces = \"eth1\"\n\
                    [[rules]]\nname = \"r\"\nfrom = \"a\"\n";
        let (doc, diags) = parse(text);
        assert!(doc.is_some());
        assert_eq!(
            diags,
            [
                "1:11 `version` in the top level must be an integer, not a string",
                "2:8 invalid `mode` value \"block\" in the top level",
                "3:1 unknown key `colour` in the top level",
                "4:1 missing key `networks` in zone \"a\"",
                "6:14 `interfaces` in zone \"a\" must be an array, not a string",
                "7:1 missing key `to` in rule \"r\"",
                "7:1 missing key `protocol` in rule \"r\"",
            ]
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let (doc, diags) = parse("version = 1\nmode = enforce\n");
        assert!(doc.is_none());
        assert_eq!(diags.len(), 1);
        assert!(diags[0].starts_with("2:8 invalid TOML"), "{diags:?}");
    }

    #[test]
    fn dotted_keys_and_inline_tables_are_read_like_headers() {
        let text = "version = 1\ndefaults.unknown = \"allow\"\n\
                    zones = [{ name = \"a\", interfaces = [\"eth1\"], networks = [\"10.0.0.0/8\"], vlan = 7 }]\n";
        let (doc, diags) = parse(text);
        assert_eq!(diags, Vec::<String>::new());
        let doc = doc.expect("parsed");
        assert_eq!(doc.defaults.unknown, Action::Allow);
        assert_eq!(doc.defaults.intra_zone, Action::Allow);
        assert_eq!(doc.zones[0].interfaces.items[0].value.vlan, Some(7));
        assert_eq!(
            doc.zones[0].interfaces.items[0].loc,
            Loc { line: 3, col: 38 }
        );
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            cidr("10.10.0.0/16").map(|n| n.to_string()),
            Ok("10.10.0.0/16".into())
        );
        assert_eq!(
            cidr("fd10::/48").map(|n| n.to_string()),
            Ok("fd10::/48".into())
        );
        let host_bits = cidr("10.10.0.1/16").expect_err("host bits");
        assert_eq!(
            host_bits.canonical.map(|n| n.to_string()),
            Some("10.10.0.0/16".into())
        );
        assert!(host_bits.help.contains("\"10.10.0.0/16\""));
        assert!(
            cidr("10.0.0.1")
                .expect_err("no prefix")
                .help
                .contains("10.0.0.1/32")
        );
        assert!(
            cidr("fd10::1")
                .expect_err("no prefix")
                .help
                .contains("fd10::1/128")
        );
        assert!(
            cidr("10.0.0.0/33")
                .expect_err("long prefix")
                .message
                .contains("/33")
        );
        assert!(
            cidr("10.0.0/8")
                .expect_err("bad")
                .message
                .starts_with("invalid CIDR")
        );
        assert!(cidr("").is_err());
    }

    #[test]
    fn interfaces() {
        assert_eq!(interface("eth1"), Ok(("eth1".into(), None)));
        assert_eq!(interface("eth1.100"), Ok(("eth1".into(), Some(100))));
        assert_eq!(interface("br.lan"), Ok(("br.lan".into(), None)));
        assert_eq!(
            interface("enp0s31f6.4094"),
            Ok(("enp0s31f6".into(), Some(4094)))
        );
        for bad in ["eth1.0", "eth1.4095", "eth1.99999999999", ""] {
            assert!(interface(bad).is_err(), "{bad}");
        }
        for bad in [
            "eth 1",
            "a/b",
            "eth1:0",
            "sixteen-bytes-xx",
            "..",
            ".100",
            "\t",
        ] {
            assert!(
                interface(bad)
                    .expect_err(bad)
                    .message
                    .starts_with("invalid interface"),
                "{bad}"
            );
        }
        assert!(interface("fifteen-bytes-x").is_ok());
    }

    #[test]
    fn ports() {
        assert_eq!(port_range("443"), Ok(PortRange { lo: 443, hi: 443 }));
        assert_eq!(
            port_range("8000-8010"),
            Ok(PortRange { lo: 8000, hi: 8010 })
        );
        assert_eq!(port_range("1-65535"), Ok(PortRange { lo: 1, hi: 65535 }));
        for bad in ["0", "65536", "1-70000", "99999999999999999999"] {
            assert!(
                port_range(bad)
                    .expect_err(bad)
                    .message
                    .starts_with("port out of range"),
                "{bad}"
            );
        }
        assert!(
            port_range("8010-8000")
                .expect_err("reversed")
                .help
                .contains("8000-8010")
        );
        for bad in ["", "http", "-1", "80-", "1-2-3", " 80", "+80"] {
            assert!(
                port_range(bad)
                    .expect_err(bad)
                    .message
                    .starts_with("invalid port"),
                "{bad}"
            );
        }
        assert!(port(0, "0").is_err());
        assert!(port(-5, "-5").is_err());
        assert_eq!(port(65535, "65535"), Ok(65535));
    }

    #[test]
    fn macs() {
        let m = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(mac("52:54:00:12:34:56"), Ok(m));
        assert_eq!(mac("52-54-00-12-34-56"), Ok(m));
        assert_eq!(
            mac("52:54:00:12:34:5A"),
            Ok([0x52, 0x54, 0x00, 0x12, 0x34, 0x5a])
        );
        for bad in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5254.0012.3456",
            "52:54:00:12:34:5g",
            "52-54:00:12:34:56",
            "+2:54:00:12:34:56",
        ] {
            assert!(
                mac(bad).expect_err(bad).message.starts_with("invalid MAC"),
                "{bad}"
            );
        }
        assert!(
            mac("ff:ff:ff:ff:ff:ff")
                .expect_err("bcast")
                .message
                .contains("broadcast")
        );
        assert!(
            mac("01:00:5e:00:00:01")
                .expect_err("mcast")
                .message
                .contains("multicast")
        );
        assert!(
            mac("00:00:00:00:00:00")
                .expect_err("zero")
                .message
                .contains("all-zero")
        );
    }
}
