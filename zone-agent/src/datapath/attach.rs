//! Attach the program to zone interfaces: native XDP, falling back to generic (with a
//! warning) unless a mode is forced.

use std::collections::BTreeSet;

use aya::programs::{XdpMode as AyaMode, xdp::XdpLinkId};
use tracing::{info, warn};

use super::{Datapath, DatapathError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// Native (driver) XDP, generic if the driver cannot.
    #[default]
    Auto,
    Native,
    Generic,
}

pub(crate) struct Attached {
    id: XdpLinkId,
    pub mode: &'static str,
}

impl Datapath {
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<&'static str, DatapathError> {
        if let Some(a) = self.links.get(iface) {
            return Ok(a.mode);
        }
        let prog = self.program_mut();
        let tries: &[(AyaMode, &'static str)] = match mode {
            XdpMode::Auto => &[(AyaMode::Driver, "native"), (AyaMode::Skb, "generic")],
            XdpMode::Native => &[(AyaMode::Driver, "native")],
            XdpMode::Generic => &[(AyaMode::Skb, "generic")],
        };
        let mut last = None;
        for (i, (m, label)) in tries.iter().enumerate() {
            match prog.attach(iface, *m) {
                Ok(id) => {
                    if i > 0 {
                        warn!(iface, "native XDP unavailable, attached in generic mode (slower)");
                    }
                    info!(iface, mode = label, "XDP attached");
                    self.links.insert(iface.to_string(), Attached { id, mode: label });
                    return Ok(label);
                }
                Err(aya::programs::ProgramError::UnknownInterface { .. }) => {
                    return Err(DatapathError::NoInterface(iface.to_string()));
                }
                Err(source) => {
                    if tries.len() > i + 1 {
                        warn!(iface, error = %source, "native XDP attach failed, trying generic");
                    }
                    last = Some(DatapathError::Attach { iface: iface.to_string(), mode: label, source });
                }
            }
        }
        Err(last.expect("at least one mode tried"))
    }

    pub fn detach(&mut self, iface: &str) -> Result<(), DatapathError> {
        if let Some(a) = self.links.remove(iface) {
            self.program_mut()
                .detach(a.id)
                .map_err(|source| DatapathError::Attach { iface: iface.to_string(), mode: a.mode, source })?;
            info!(iface, "XDP detached");
        }
        Ok(())
    }

    /// Attach to every interface in `wanted` not attached yet.
    pub fn attach_all(&mut self, wanted: &BTreeSet<String>, mode: XdpMode) -> Result<(), DatapathError> {
        for iface in wanted {
            self.attach(iface, mode)?;
        }
        Ok(())
    }

    /// Detach from interfaces no longer in `wanted`.
    pub fn detach_others(&mut self, wanted: &BTreeSet<String>) -> Result<(), DatapathError> {
        let gone: Vec<String> = self.links.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for iface in gone {
            self.detach(&iface)?;
        }
        Ok(())
    }

    pub fn detach_all(&mut self) -> Result<(), DatapathError> {
        self.detach_others(&BTreeSet::new())
    }
}
