//! The one reader of policy files (`policy check | explain | diff | export` and the agent's
//! load and reload all come through [`read`]). Whatever sits at the path, it returns within
//! bounded time and memory: a FIFO would block `open()` and `read()` forever, `/dev/zero`
//! never ends, a huge file would be read, parsed and held whole. So the file is opened
//! non-blocking, the opened descriptor (not the path, which may change meanwhile) must be a
//! regular file of at most [`MAX_POLICY_BYTES`], and at most that many bytes plus one are
//! read (a file that grows after the check is still caught).

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

pub use zone_agent_common::MAX_POLICY_BYTES;

use super::diagnostic::Diagnostic;
use super::types::Loc;

const START: Loc = Loc { line: 1, col: 1 };

fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// "32 MiB" for the size cap in messages.
pub fn cap_text() -> String {
    format!("{} MiB ({MAX_POLICY_BYTES} bytes)", MAX_POLICY_BYTES >> 20)
}

fn too_large(path: &Path, size: Option<u64>) -> Diagnostic {
    let what = match size {
        Some(n) => format!("the policy file is too large: {n} bytes"),
        None => "the policy file is too large".to_owned(),
    };
    Diagnostic::error(
        path,
        START,
        format!("{what}, at most {} are read", cap_text()),
        Some(
            "a policy at the data path's limits (100 000 rules) fits well within this; check that \
             this is the policy file, and merge rules that differ only in ports or addresses"
                .into(),
        ),
    )
}

/// Why a policy file could not be read; both carry a located diagnostic.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not something a policy can be read from (a FIFO, a device, a directory, too large):
    /// reading again will not help until the file changes.
    #[error("{0}")]
    Refused(Diagnostic),
    /// An I/O error (descriptors or memory exhausted, a disk error, the file missing while an
    /// editor replaces it...): worth retrying.
    #[error("{0}")]
    Io(Diagnostic),
}

impl From<ReadError> for Diagnostic {
    fn from(e: ReadError) -> Diagnostic {
        match e {
            ReadError::Refused(d) | ReadError::Io(d) => d,
        }
    }
}

/// The contents of the policy file at `path`, or one located error saying what is wrong with
/// it and how to fix it.
pub fn read(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    read_file(path).map_err(Diagnostic::from)
}

/// [`read`], telling a refused file from an I/O error (the agent retries only the latter).
pub fn read_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let io_error = |e: std::io::Error| {
        ReadError::Io(Diagnostic::error(
            path,
            START,
            format!("cannot read policy file: {e}"),
            Some("check the path and that this user may read the file".into()),
        ))
    };
    // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
    // O_NOCTTY: a terminal named as the policy never becomes our controlling terminal.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::Refused(Diagnostic::error(
            path,
            START,
            format!(
                "the policy file is {}, not a regular file",
                kind(meta.file_type())
            ),
            Some(
                "give the path of the policy file itself (a regular file such as \
                 /etc/zone-agent/policy.toml; a symbolic link to one is fine)"
                    .into(),
            ),
        )));
    }
    if meta.len() > MAX_POLICY_BYTES {
        return Err(ReadError::Refused(too_large(path, Some(meta.len()))));
    }
    // The size may have changed since fstat: read one byte more than allowed to notice.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 1);
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(ReadError::Refused(too_large(path, None)));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_without_reading() {
        for (path, what) in [
            ("/dev/zero", "a character device"),
            ("/dev/null", "a character device"),
            ("/", "a directory"),
        ] {
            let e = read(Path::new(path)).expect_err(path);
            assert!(e.message.contains(what), "{e}");
            assert!(e.message.contains("not a regular file"), "{e}");
        }
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("za-read-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = dir("fifo");
        let p = d.join("policy.toml");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would never return.
        match read_file(&p) {
            Err(ReadError::Refused(e)) => assert!(e.message.contains("FIFO"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn oversized_refused_missing_is_io() {
        let d = dir("size");
        let p = d.join("policy.toml");
        let f = File::create(&p).unwrap();
        f.set_len(MAX_POLICY_BYTES + 1).unwrap(); // sparse: nothing is written
        assert!(matches!(read_file(&p), Err(ReadError::Refused(_))));
        std::fs::write(&p, "version = 1\n").unwrap();
        assert_eq!(read_file(&p).unwrap(), b"version = 1\n");
        // Missing: an I/O error, which the agent's control task retries.
        assert!(matches!(read_file(&d.join("nope")), Err(ReadError::Io(_))));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
