//! Pinned state under the pin dir (a bpffs), so that enforcement outlives the agent:
//!
//! ```text
//! <pin_dir>/links/<ifname>        the XDP bpf_link of each zone interface
//! <pin_dir>/maps-<fingerprint>/   every map but the per-invocation scratch
//! ```
//!
//! A link holds its program, and the program its maps, so a stopped or killed agent leaves
//! the gates closed. The maps directory is named by the ABI fingerprint
//! (`zone_agent_common::abi_fingerprint`): an agent adopts only maps whose layout and
//! meaning it was built for, and replaces any other (`maps-*` of another fingerprint).
//! Links have no version: a new program is swapped into an existing link atomically
//! (`BPF_LINK_UPDATE`), which never leaves the interface without a program.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use tracing::{info, warn};
use zone_agent_common::{PINNED_MAPS, abi_fingerprint};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The layout of a pin dir.
#[derive(Clone, Debug)]
pub struct Pins {
    pub root: PathBuf,
}

impl Pins {
    pub fn new(root: &Path) -> Pins {
        Pins {
            root: root.to_path_buf(),
        }
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join(format!("maps-{:016x}", abi_fingerprint()))
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, iface: &str) -> PathBuf {
        self.links_dir().join(iface)
    }

    /// Interfaces with a pinned link.
    pub fn pinned_links(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.links_dir())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// `maps-*` directories of other fingerprints (state of an incompatible version).
    pub fn stale_map_dirs(&self) -> Vec<PathBuf> {
        let ours = self.maps_dir();
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p != &ours
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("maps-"))
            })
            .collect()
    }

    /// Creates the directories (0700) on a bpffs, mounting one if there is none.
    pub fn prepare(&self) -> io::Result<()> {
        ensure_bpffs(&self.root)?;
        for d in [self.root.clone(), self.links_dir(), self.maps_dir()] {
            mkdir_private(&d)?;
        }
        Ok(())
    }

    /// True if our maps dir holds maps whose kernel layout differs from what this build
    /// expects (same fingerprint, different maps: never adopt those).
    pub fn maps_mismatch(&self) -> Option<String> {
        let dir = self.maps_dir();
        for m in PINNED_MAPS {
            let path = dir.join(m.name);
            if !path.exists() {
                continue;
            }
            match aya::maps::MapInfo::from_pin(&path) {
                Ok(i)
                    if i.key_size() == m.key_size
                        && i.value_size() == m.value_size
                        && i.max_entries() == m.max_entries => {}
                Ok(i) => {
                    return Some(format!(
                        "{}: key {} value {} entries {} (expected {} {} {})",
                        m.name,
                        i.key_size(),
                        i.value_size(),
                        i.max_entries(),
                        m.key_size,
                        m.value_size,
                        m.max_entries
                    ));
                }
                Err(e) => return Some(format!("{}: {e}", m.name)),
            }
        }
        None
    }

    /// Removes the pins of `dir` (maps live on while a program still uses them).
    pub fn remove_dir(dir: &Path) -> io::Result<()> {
        for e in std::fs::read_dir(dir)?.flatten() {
            std::fs::remove_file(e.path())?;
        }
        std::fs::remove_dir(dir)
    }

    /// Detaches the pinned link of `iface` now (BPF_LINK_DETACH: also if another process
    /// holds it open) and removes its pin. Returns whether a live link was detached (false:
    /// no pin, or its interface was already gone).
    pub fn detach_link(&self, iface: &str) -> io::Result<bool> {
        let path = self.link(iface);
        if !path.exists() {
            return Ok(false);
        }
        let detached = match obj_get(&path) {
            Ok(fd) => match link_detach(&fd) {
                Ok(()) => true,
                // ENOLINK: already detached (its interface was deleted).
                Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => false,
                Err(e) => return Err(io::Error::new(e.kind(), format!("detaching {iface}: {e}"))),
            },
            Err(e) => {
                warn!(path = %path.display(), "cannot open pinned link: {e}");
                false
            }
        };
        std::fs::remove_file(&path)?;
        Ok(detached)
    }

    /// Detaches every pinned link and removes every pin. Returns the interfaces detached.
    pub fn remove_all(&self) -> io::Result<Vec<String>> {
        let mut detached = Vec::new();
        for iface in self.pinned_links() {
            if self.detach_link(&iface)? {
                detached.push(iface);
            }
        }
        let _ = std::fs::remove_dir(self.links_dir());
        for dir in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = dir.path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("maps-"))
            {
                Self::remove_dir(&p)?;
            }
        }
        Ok(detached)
    }
}

fn mkdir_private(d: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("creating {}: {e}", d.display()),
        )),
    }
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure `dir` is (or will be created) on a bpffs. If its nearest existing ancestor is
/// not one, a bpffs is mounted at /sys/fs/bpf (for paths below it) or at `dir` itself.
pub fn ensure_bpffs(dir: &Path) -> io::Result<()> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if is_bpffs(&probe) {
        return Ok(());
    }
    let sys = Path::new("/sys/fs/bpf");
    let target = if dir.starts_with(sys) && sys.is_dir() {
        sys.to_path_buf()
    } else {
        dir.to_path_buf()
    };
    mkdir_private(&target)?;
    let t = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pin dir contains a NUL byte"))?;
    // SAFETY: valid C strings; a plain bpffs mount.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            t.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "{} is not on a bpffs and mounting one at {} failed: {e}",
                dir.display(),
                target.display()
            ),
        ));
    }
    info!(at = %target.display(), "mounted a bpffs for the pins");
    Ok(())
}

pub(crate) fn sys_bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<i64> {
    // SAFETY: `attr` is a zeroed, large enough `union bpf_attr` for these commands.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of_val(attr)) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// BPF_OBJ_GET: a new fd for a pinned object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64; // pathname
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_LINK_DETACH: detaches the link now, whoever else holds it.
pub fn link_detach(fd: &OwnedFd) -> io::Result<()> {
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u32 as u64; // link_detach.link_fd
    sys_bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// (program id, ifindex) of an XDP link; ifindex 0 once its interface is gone.
pub fn link_info(fd: &OwnedFd) -> io::Result<(u32, u32)> {
    // struct bpf_link_info: type, id, prog_id (u32 each), then the per-type union at offset
    // 16, whose XDP member starts with the ifindex.
    let mut info = [0u32; 64];
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u32 as u64 | ((size_of_val(&info) as u64) << 32); // bpf_fd, info_len
    attr[1] = info.as_mut_ptr() as u64; // info
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((info[2], info[4]))
}

/// Takes the exclusive lock that makes one agent the owner of a pin dir:
/// `flock(LOCK_EX | LOCK_NB)` on the directory itself (opened with `O_DIRECTORY`; a bpffs holds
/// no regular files to lock). The lock lives as long as the returned fd: keep it for the
/// agent's lifetime; the kernel releases it when the process exits, however it exits.
/// `Err(WouldBlock)`: another process holds it.
pub fn lock_dir(dir: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    // SAFETY: a valid open fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, e));
        }
        return Err(e);
    }
    Ok(OwnedFd::from(f))
}
