//! The comparison: one loaded program for the whole run, a fresh model per case.

use super::*;

#[derive(Default, Debug)]
pub(crate) struct Totals {
    pub(crate) cases: u64,
    pub(crate) frames: u64,
    pub(crate) cuts: u64,
    pub(crate) reloads: u64,
    pub(crate) advances: u64,
    pub(crate) advances_skipped: u64,
    pub(crate) corpus: u64,
    /// Generated policies that `compile` refused (capacity), so no case.
    pub(crate) rejected: u64,
    /// Model decisions by reason, to see what the generators reach.
    pub(crate) reasons: BTreeMap<String, u64>,
    pub(crate) apply_time: std::time::Duration,
}

pub(crate) enum RunError {
    /// The policy does not fit the data path (compile's capacity checks): not a case.
    Reject(String),
    Mismatch(String),
}

pub(crate) struct Engine {
    pub(crate) dp: Datapath,
    pub(crate) totals: Totals,
    /// Text of the policy in the active set: a case that starts with it needs no `apply`
    /// (shrinking reruns the same policy many times).
    pub(crate) active: Option<String>,
}

/// One case in progress.
pub(crate) struct Run {
    pub(crate) model: Model,
    /// Kernel generation = model generation + `gen_base`.
    pub(crate) gen_base: u32,
    /// Kernel global counters when the case started (they are never reset).
    pub(crate) base: GlobalCounters,
    /// Model counters at the last reload (zone-pair and rule counters are per policy set
    /// in the kernel and start at zero with each `apply`).
    pub(crate) at_reload: ModelCounters,
    /// The active set's zone-pair and rule counters when the case started without an
    /// `apply` (empty after one).
    pub(crate) set_base: ModelCounters,
    /// How far the model's clock is ahead of the kernel's (see `Engine::age`).
    pub(crate) offset: u64,
    /// Kernel counters after the last step.
    pub(crate) last: ModelCounters,
}

pub(crate) fn sub(a: Counter, b: Counter) -> Counter {
    Counter {
        packets: a.packets - b.packets,
        bytes: a.bytes - b.bytes,
    }
}

pub(crate) fn minus<K: Ord + Copy>(
    a: &BTreeMap<K, Counter>,
    b: &BTreeMap<K, Counter>,
) -> BTreeMap<K, Counter> {
    a.iter()
        .map(|(k, c)| (*k, sub(*c, b.get(k).copied().unwrap_or_default())))
        .filter(|(_, c)| c.packets > 0)
        .collect()
}

pub(crate) fn drop_label(i: u32) -> String {
    let (prefix, r) = if i >= DropReason::AUDIT_OFFSET {
        ("audit", i - DropReason::AUDIT_OFFSET)
    } else {
        ("drop", i)
    };
    let name = DropReason::ALL
        .iter()
        .find(|d| **d as u32 == r)
        .map_or("?", |d| d.label());
    format!("{prefix}:{name}")
}

pub(crate) fn pass_label(i: u32) -> String {
    format!(
        "pass:{}",
        PassReason::ALL
            .iter()
            .find(|p| **p as u32 == i)
            .map_or("?", |p| p.label())
    )
}

/// What moved between two counter snapshots, as labels.
pub(crate) fn moved(before: &ModelCounters, after: &ModelCounters) -> String {
    let mut out = vec![];
    for (k, c) in &after.drops {
        if before.drops.get(k) != Some(c) {
            out.push(drop_label(*k));
        }
    }
    for (k, c) in &after.passes {
        if before.passes.get(k) != Some(c) {
            out.push(pass_label(*k));
        }
    }
    for (k, c) in &after.flow_events {
        if before.flow_events.get(k) != Some(c) {
            out.push(format!("flow event {}", flow_event_label(*k)));
        }
    }
    for (k, c) in &after.rules {
        if before.rules.get(k) != Some(c) {
            out.push(format!("rule {k}"));
        }
    }
    for ((f, t, v), c) in &after.zone_pairs {
        if before.zone_pairs.get(&(*f, *t, *v)) != Some(c) {
            out.push(format!("zones {f}->{t} {}", v.label()));
        }
    }
    out.join(", ")
}

pub(crate) fn flow_event_label(e: u32) -> &'static str {
    FlowEvent::ALL
        .iter()
        .find(|x| **x as u32 == e)
        .map_or("?", |x| x.label())
}

pub(crate) fn counters_diff(kernel: &ModelCounters, model: &ModelCounters) -> String {
    fn side<K: Ord + Copy>(
        out: &mut String,
        name: impl Fn(K) -> String,
        k: &BTreeMap<K, Counter>,
        m: &BTreeMap<K, Counter>,
    ) {
        for key in k
            .keys()
            .chain(m.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let (a, b) = (
                k.get(key).copied().unwrap_or_default(),
                m.get(key).copied().unwrap_or_default(),
            );
            if a != b {
                writeln!(
                    out,
                    "    {}: kernel {}/{}B, model {}/{}B",
                    name(*key),
                    a.packets,
                    a.bytes,
                    b.packets,
                    b.bytes
                )
                .unwrap();
            }
        }
    }
    let mut out = String::new();
    side(&mut out, drop_label, &kernel.drops, &model.drops);
    side(&mut out, pass_label, &kernel.passes, &model.passes);
    side(
        &mut out,
        |e| format!("flow event {}", flow_event_label(e)),
        &kernel.flow_events,
        &model.flow_events,
    );
    side(
        &mut out,
        |r| format!("rule {r}"),
        &kernel.rules,
        &model.rules,
    );
    side(
        &mut out,
        |(f, t, v): (u8, u8, Verdict)| format!("zones {f}->{t} {}", v.label()),
        &kernel.zone_pairs,
        &model.zone_pairs,
    );
    out
}

pub(crate) fn describe(d: &Decision, audit: bool) -> String {
    let action = if d.xdp_pass(audit) {
        "XDP_PASS"
    } else {
        "XDP_DROP"
    };
    let kind = match d.outcome {
        model::Outcome::Pass(_) => "pass",
        model::Outcome::Drop(_) if d.audited_drop(audit) => "audit",
        model::Outcome::Drop(_) => "drop",
    };
    format!(
        "{action} {kind}:{} rule={:?} zones {}->{} {}",
        d.reason_label(),
        d.rule,
        d.from,
        d.to,
        d.verdict(audit).label()
    )
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub(crate) fn addr_of(family: u8, a: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

impl Engine {
    pub(crate) fn new() -> Self {
        Engine {
            dp: Datapath::load().expect("load XDP program"),
            totals: Totals::default(),
            active: None,
        }
    }

    pub(crate) fn load(&mut self, text: &str) -> Result<Policy, RunError> {
        let policy =
            check_policy(text).map_err(|e| RunError::Mismatch(format!("invalid policy: {e}")))?;
        let compiled = compile::compile(&policy).map_err(|d| RunError::Reject(format!("{d:?}")))?;
        let t = Instant::now();
        self.active = None;
        self.dp
            .apply(&compiled, zone_agent::agent::ifindex)
            .expect("apply");
        self.active = Some(text.to_string());
        self.totals.apply_time += t.elapsed();
        Ok(policy)
    }

    /// Runs one case from a clean flow and fragment table.
    pub(crate) fn run(&mut self, policies: &[String], ops: &[Op]) -> Result<(), RunError> {
        let m = &mut self.dp.maps;
        for table in [&mut m.flows, &mut m.embryos] {
            let flows: Vec<FlowKey> = table.keys().filter_map(Result::ok).collect();
            for k in flows {
                table.remove(&k).expect("remove flow");
            }
        }
        let frags: Vec<FragKey> = self.dp.maps.frags.keys().filter_map(Result::ok).collect();
        for k in frags {
            self.dp
                .maps
                .frags
                .remove(&k)
                .expect("remove fragment entry");
        }
        let (policy, set_base) = if self.active.as_deref() == Some(policies[0].as_str()) {
            // Already enforcing: its set's counters run on from where the last case left them.
            let policy = check_policy(&policies[0]).map_err(RunError::Mismatch)?;
            let mut c = ModelCounters::default();
            self.set_counters(&policy, &mut c);
            (policy, c)
        } else {
            (self.load(&policies[0])?, ModelCounters::default())
        };
        let mut run = Run {
            model: Model::new(policy),
            gen_base: self.dp.generation - 1,
            base: self.dp.global_counters().expect("global counters"),
            set_base,
            at_reload: ModelCounters::default(),
            offset: 0,
            last: ModelCounters::default(),
        };
        self.totals.cases += 1;
        for (i, op) in ops.iter().enumerate() {
            let r = match op {
                Op::Send { iface, bytes } => {
                    self.totals.frames += 1;
                    self.frame(&mut run, iface, bytes)
                }
                Op::Cuts { iface, bytes } => (14..bytes.len()).try_for_each(|len| {
                    self.totals.cuts += 1;
                    self.frame(&mut run, iface, &bytes[..len])
                        .map_err(|e| format!("cut at {len} bytes: {e}"))
                }),
                Op::Advance(ns) => {
                    if self.age(*ns) {
                        run.offset += ns;
                        self.totals.advances += 1;
                    } else {
                        self.totals.advances_skipped += 1;
                    }
                    self.state(&mut run)
                }
                Op::Reload(k) => {
                    let policy = self.load(&policies[*k])?;
                    run.model.reload(policy);
                    run.at_reload = run.model.counters().clone();
                    run.set_base = ModelCounters::default();
                    self.totals.reloads += 1;
                    self.state(&mut run)
                }
            };
            r.map_err(|e| RunError::Mismatch(format!("step {i} ({}): {e}", op_line(op))))?;
        }
        Ok(())
    }

    pub(crate) fn frame(&mut self, run: &mut Run, iface: &str, bytes: &[u8]) -> Result<(), String> {
        let action = xdp::test_run(self.dp.program(), iface, bytes);
        let now = monotonic_coarse_ns() + run.offset;
        let d = mframe::decide(&mut run.model, bytes, iface, now);
        let audit = run.model.audit_mode();
        let want = if d.xdp_pass(audit) {
            XDP_PASS
        } else {
            XDP_DROP
        };
        let kind = describe(&d, audit)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        *self.totals.reasons.entry(kind).or_default() += 1;
        let before = run.last.clone();
        let r = self.state(run);
        if action != want || r.is_err() {
            let kname = if action == XDP_PASS {
                "XDP_PASS"
            } else {
                "XDP_DROP"
            };
            return Err(format!(
                "{} bytes on {iface}\n  frame:  {}\n  model:  {}\n  kernel: {kname} (moved: {})\n{}",
                bytes.len(),
                hex(bytes),
                describe(&d, audit),
                moved(&before, &run.last),
                r.err().unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// Compares counters, flows and the fragment table; keeps the kernel's counters.
    pub(crate) fn state(&mut self, run: &mut Run) -> Result<(), String> {
        let kernel = self.kernel_counters(run);
        let m = run.model.counters();
        let mut model = m.clone();
        model.zone_pairs = minus(&m.zone_pairs, &run.at_reload.zone_pairs);
        model.rules = minus(&m.rules, &run.at_reload.rules);
        let mut out = String::new();
        if kernel != model {
            write!(
                out,
                "  counters differ:\n{}",
                counters_diff(&kernel, &model)
            )
            .unwrap();
        }
        run.last = kernel;
        let kf = self.kernel_flows(run.gen_base);
        let mf = run.model.flow_list();
        if kf != mf {
            writeln!(out, "  flows differ:\n    kernel {kf:?}\n    model  {mf:?}").unwrap();
        }
        let kfrags = self.dp.maps.frags.keys().count();
        if kfrags != run.model.fragments() {
            writeln!(
                out,
                "  fragment entries: kernel {kfrags}, model {}",
                run.model.fragments()
            )
            .unwrap();
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }

    /// The kernel's counters in the model's shape: global ones since the case started, zone
    /// pairs and rules of the active set (since the last reload).
    pub(crate) fn kernel_counters(&self, run: &Run) -> ModelCounters {
        let g = self.dp.global_counters().expect("global counters");
        let mut c = ModelCounters::default();
        let put = |map: &mut BTreeMap<u32, Counter>, key: u32, now: Counter, then: Counter| {
            let d = sub(now, then);
            if d.packets > 0 {
                map.insert(key, d);
            }
        };
        for (i, (r, k)) in g.drops.iter().enumerate() {
            put(&mut c.drops, *r as u32, *k, run.base.drops[i].1);
        }
        for (i, (r, k)) in g.audit_drops.iter().enumerate() {
            put(
                &mut c.drops,
                DropReason::AUDIT_OFFSET + *r as u32,
                *k,
                run.base.audit_drops[i].1,
            );
        }
        for (i, (r, k)) in g.passes.iter().enumerate() {
            put(&mut c.passes, *r as u32, *k, run.base.passes[i].1);
        }
        for (i, (e, n)) in g.flow_events.iter().enumerate() {
            let count = |packets| Counter { packets, bytes: 0 };
            put(
                &mut c.flow_events,
                *e as u32,
                count(*n),
                count(run.base.flow_events[i].1),
            );
        }
        self.set_counters(run.model.policy(), &mut c);
        c.zone_pairs = minus(&c.zone_pairs, &run.set_base.zone_pairs);
        c.rules = minus(&c.rules, &run.set_base.rules);
        c
    }

    /// The active set's zone-pair and rule counters for `p`, into `c`.
    pub(crate) fn set_counters(&self, p: &Policy, c: &mut ModelCounters) {
        let s = self
            .dp
            .set_counters(self.dp.active_set, p.zones.len() + 1, p.rules.len())
            .expect("set counters");
        for (f, t, v, k) in s.zones {
            c.zone_pairs.insert((f, t, v), k);
        }
        for (i, k) in s.rules.iter().enumerate() {
            if k.packets > 0 {
                c.rules.insert(i, *k);
            }
        }
    }

    /// Both flow tables: each entry says which table holds it, and a key held in both
    /// appears twice (the model has each key once), so a flow in the wrong table or in two
    /// tables is a mismatch.
    pub(crate) fn kernel_flows(&self, gen_base: u32) -> Vec<FlowInfo> {
        let m = &self.dp.maps;
        let replied = m.flows.iter().filter_map(Result::ok).map(|e| (e, false));
        let embryonic = m.embryos.iter().filter_map(Result::ok).map(|e| (e, true));
        let mut v: Vec<FlowInfo> = replied
            .chain(embryonic)
            .map(|((k, st), embryonic): ((FlowKey, FlowState), bool)| {
                let a = (addr_of(k.family, k.a), k.a_port);
                let b = (addr_of(k.family, k.b), k.b_port);
                let (orig_src, orig_dst) = if st.orig_is_a != 0 { (a, b) } else { (b, a) };
                FlowInfo {
                    proto: k.proto,
                    orig_src,
                    orig_dst,
                    from: st.from_zone,
                    to: st.to_zone,
                    rule: st.rule as usize,
                    audit: st.flags & FLOW_AUDIT != 0,
                    generation: st.generation.wrapping_sub(gen_base),
                    replied: st.flags & FLOW_REPLIED != 0,
                    embryonic,
                    counts: FlowCounts {
                        orig_packets: st.orig_packets,
                        orig_bytes: st.orig_bytes,
                        reply_packets: st.reply_packets,
                        reply_bytes: st.reply_bytes,
                    },
                }
            })
            .collect();
        v.sort_by_key(|f| (f.proto, f.orig_src, f.orig_dst, f.embryonic));
        v
    }

    /// Idle time passes: the kernel's clock cannot be moved, so every flow and fragment
    /// entry's timestamp is moved back by `ns` instead (what the entry would hold had it been
    /// touched `ns` earlier), and the model's clock runs `ns` ahead from now on. Both sides
    /// then see the same idle times. The timestamps count from boot: an entry younger than
    /// `ns` plus a second of boot time cannot be moved back that far, and then time does not
    /// pass at all (counted as skipped; only possible on a machine up for less than
    /// `ns`).
    pub(crate) fn age(&mut self, ns: u64) -> bool {
        let m = &mut self.dp.maps;
        let flows: Vec<(FlowKey, FlowState)> = m.flows.iter().filter_map(Result::ok).collect();
        let embryos: Vec<(FlowKey, FlowState)> = m.embryos.iter().filter_map(Result::ok).collect();
        let frags: Vec<(FragKey, FragState)> = m.frags.iter().filter_map(Result::ok).collect();
        let floor = ns + NS;
        if flows
            .iter()
            .chain(&embryos)
            .any(|(_, s)| s.last_seen_ns < floor)
            || frags.iter().any(|(_, s)| s.last_seen_ns < floor)
        {
            return false;
        }
        for (table, entries) in [(&mut m.flows, flows), (&mut m.embryos, embryos)] {
            for (k, mut s) in entries {
                s.last_seen_ns -= ns;
                table.insert(k, s, 0).expect("age flow");
            }
        }
        for (k, mut s) in frags {
            s.last_seen_ns -= ns;
            m.frags.insert(k, s, 0).expect("age fragment entry");
        }
        true
    }
}
