//! Attach the program to zone interfaces: native XDP, falling back to generic (with a
//! warning) unless a mode is forced. With pins, each interface's bpf_link is pinned, and an
//! interface that already has a pinned link gets the new program swapped into it
//! atomically (never a moment without enforcement, never two programs).

use std::collections::BTreeSet;

use aya::programs::{XdpMode as AyaMode, links::FdLink, links::PinnedLink, xdp::XdpLink};
use tracing::{info, warn};

use super::{
    Datapath, DatapathError,
    netlink::{MODE_GENERIC, MODE_NATIVE},
    pin, pin_err,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// Native (driver) XDP, generic if the driver cannot.
    #[default]
    Auto,
    Native,
    Generic,
}

pub(crate) struct Attached {
    /// Our handle on the link. Unpinned, dropping it detaches; pinned, the pin keeps it.
    link: FdLink,
    pub mode: &'static str,
}

impl Datapath {
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<&'static str, DatapathError> {
        if let Some(a) = self.links.get(iface) {
            return Ok(a.mode);
        }
        if let Some(link) = self.adopt_link(iface)? {
            info!(iface, "XDP link adopted: new program swapped in atomically");
            self.links.insert(
                iface.to_string(),
                Attached {
                    link,
                    mode: "adopted",
                },
            );
            return Ok("adopted");
        }
        let (link, label) = self.attach_new(iface, mode)?;
        let link = match &self.pins {
            Some(p) => {
                let path = p.link(iface);
                let pinned = link
                    .pin(&path)
                    .map_err(|e| pin_err(&path)(std::io::Error::other(e.to_string())))?;
                FdLink::from(pinned)
            }
            None => link,
        };
        info!(
            iface,
            mode = label,
            pinned = self.pins.is_some(),
            "XDP attached"
        );
        self.links
            .insert(iface.to_string(), Attached { link, mode: label });
        Ok(label)
    }

    /// Swaps our program into the interface's pinned link, if there is a live one. A link
    /// whose interface is gone (or was recreated under another ifindex) is removed instead.
    fn adopt_link(&mut self, iface: &str) -> Result<Option<FdLink>, DatapathError> {
        let Some(pins) = &self.pins else {
            return Ok(None);
        };
        let path = pins.link(iface);
        if !path.exists() {
            return Ok(None);
        }
        let live = pin::obj_get(&path)
            .and_then(|fd| pin::link_info(&fd))
            .map(|(_, idx)| idx != 0 && Some(idx) == super::ifindex(iface))
            .unwrap_or(false);
        if !live {
            warn!(
                iface,
                "pinned XDP link is stale (interface gone or recreated); attaching anew"
            );
            std::fs::remove_file(&path).map_err(pin_err(&path))?;
            return Ok(None);
        }
        let pinned = PinnedLink::from_pin(&path)
            .map_err(|e| pin_err(&path)(std::io::Error::other(e.to_string())))?;
        let xdp = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e| pin_err(&path)(std::io::Error::other(e.to_string())))?;
        let prog = self.program_mut();
        let id = prog
            .attach_to_link(xdp)
            .map_err(|source| DatapathError::Attach {
                iface: iface.to_string(),
                mode: "adopted",
                source,
            })?;
        let link = prog.take_link(id).map_err(|source| DatapathError::Attach {
            iface: iface.to_string(),
            mode: "adopted",
            source,
        })?;
        let fd = FdLink::try_from(link)
            .map_err(|e| pin_err(&path)(std::io::Error::other(e.to_string())))?;
        Ok(Some(fd))
    }

    fn attach_new(
        &mut self,
        iface: &str,
        mode: XdpMode,
    ) -> Result<(FdLink, &'static str), DatapathError> {
        let prog = self.program_mut();
        let tries: &[(AyaMode, &'static str)] = match mode {
            XdpMode::Auto => &[(AyaMode::Driver, MODE_NATIVE), (AyaMode::Skb, MODE_GENERIC)],
            XdpMode::Native => &[(AyaMode::Driver, MODE_NATIVE)],
            XdpMode::Generic => &[(AyaMode::Skb, MODE_GENERIC)],
        };
        let mut last = None;
        for (i, (m, label)) in tries.iter().enumerate() {
            match prog.attach(iface, *m) {
                Ok(id) => {
                    if i > 0 {
                        warn!(
                            iface,
                            "native XDP unavailable, attached in generic mode (slower)"
                        );
                    }
                    let err = |source| DatapathError::Attach {
                        iface: iface.to_string(),
                        mode: label,
                        source,
                    };
                    let link = prog.take_link(id).map_err(err)?;
                    // bpf_link based attachment (every kernel this agent supports) gives an
                    // fd link, the only kind that can be pinned.
                    let link = FdLink::try_from(link).map_err(|e| {
                        pin_err(std::path::Path::new(iface))(std::io::Error::other(format!(
                            "XDP attached through netlink, not a bpf_link ({e}); cannot pin"
                        )))
                    })?;
                    return Ok((link, label));
                }
                Err(aya::programs::ProgramError::UnknownInterface { .. }) => {
                    return Err(DatapathError::NoInterface(iface.to_string()));
                }
                Err(source) => {
                    if tries.len() > i + 1 {
                        warn!(iface, error = %source, "native XDP attach failed, trying generic");
                    }
                    last = Some(DatapathError::Attach {
                        iface: iface.to_string(),
                        mode: label,
                        source,
                    });
                }
            }
        }
        Err(last.expect("at least one mode tried"))
    }

    /// Removes the program from `iface` (and its pin): the interface routes unfiltered.
    pub fn detach(&mut self, iface: &str) -> Result<(), DatapathError> {
        if let Some(a) = self.links.remove(iface) {
            if let Some(p) = &self.pins {
                p.detach_link(iface).map_err(pin_err(&p.link(iface)))?;
            }
            drop(a.link);
            info!(iface, "XDP detached");
        }
        Ok(())
    }

    /// Attach to every interface in `wanted` not attached yet.
    pub fn attach_all(
        &mut self,
        wanted: &BTreeSet<String>,
        mode: XdpMode,
    ) -> Result<(), DatapathError> {
        for iface in wanted {
            self.attach(iface, mode)?;
        }
        Ok(())
    }

    /// Detach from interfaces no longer in `wanted`, including pinned links a previous run
    /// left on interfaces the policy no longer names.
    pub fn detach_others(&mut self, wanted: &BTreeSet<String>) -> Result<(), DatapathError> {
        let gone: Vec<String> = self
            .links
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for iface in gone {
            self.detach(&iface)?;
        }
        if let Some(p) = &self.pins {
            for iface in p.pinned_links() {
                if !wanted.contains(&iface) && !self.links.contains_key(&iface) {
                    p.detach_link(&iface).map_err(pin_err(&p.link(&iface)))?;
                    info!(
                        iface,
                        "XDP detached (pinned by a previous run, no longer in the policy)"
                    );
                }
            }
        }
        Ok(())
    }

    /// Detaches everything this datapath attached (and its pins).
    pub fn detach_all(&mut self) -> Result<(), DatapathError> {
        self.detach_others(&BTreeSet::new())
    }

    /// (interface, program id the kernel runs there) for every link held.
    pub fn link_programs(&self) -> Vec<(String, Option<u32>)> {
        self.links
            .keys()
            .map(|iface| {
                let prog = self
                    .pins
                    .as_ref()
                    .and_then(|p| pin::obj_get(&p.link(iface)).ok())
                    .and_then(|fd| pin::link_info(&fd).ok())
                    .map(|(prog, _)| prog);
                (iface.clone(), prog)
            })
            .collect()
    }
}
