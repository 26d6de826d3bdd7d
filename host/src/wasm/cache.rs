//! The on-disk cache of compiled modules. A compiled artifact is native
//! code that is mapped executable when loaded, so a file planted or edited
//! in the cache directory would run inside the host: the cache trusts only
//! what this host wrote.
//!
//! - The directory is created 0700 (an existing one is narrowed to 0700;
//!   one that is a symbolic link, or not ours to narrow, turns the cache
//!   off with a warning).
//! - Each artifact ends in an HMAC-SHA256 tag over its name and bytes,
//!   keyed by a per-host secret kept in the directory ([`KEY_FILE`], 32
//!   random bytes, 0600, created on first use). An artifact whose tag does
//!   not match is ignored and compiled again; it is never deserialised.
//! - Files are opened without following symbolic links and written under a
//!   fresh temporary name opened create-new, then renamed into place.
//! - Only the names the engine asks for are read: any other file is ignored.

use hmac::{KeyInit, Mac};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

type HmacSha256 = hmac::Hmac<sha2_mac::Sha256>;

/// The per-host MAC key's file name inside the cache directory.
pub(super) const KEY_FILE: &str = "cache-mac.key";

/// Bytes of the tag at the end of each artifact.
const TAG: usize = 32;

/// A cache directory this host owns, and its MAC key.
pub(crate) struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiskCache({})", self.dir.display())
    }
}

impl DiskCache {
    /// Opens `dir`, creating it (0700) and its key (0600) on first use.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        make_private_dir(dir)?;
        let key = read_or_make_key(&dir.join(KEY_FILE))?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    /// The artifact called `name`, if this host wrote it: `None` when it is
    /// missing, not a regular file, or its tag does not match (said so in
    /// the log).
    pub(crate) fn read(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        let mut file = match open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring a compiled module that cannot be opened: {e}");
                return None;
            }
        };
        let mut bytes = Vec::new();
        let read = file
            .metadata()
            .and_then(|m| {
                if m.is_file() {
                    Ok(())
                } else {
                    Err(io::Error::other("not a regular file"))
                }
            })
            .and_then(|()| file.read_to_end(&mut bytes));
        if let Err(e) = read {
            tracing::warn!(path = %path.display(), "ignoring a compiled module that cannot be read: {e}");
            return None;
        }
        if bytes.len() < TAG {
            tracing::warn!(path = %path.display(), "ignoring a compiled module without a tag; it is compiled again");
            return None;
        }
        let tag = bytes.split_off(bytes.len() - TAG);
        if self.mac(name, &bytes).verify_slice(&tag).is_err() {
            tracing::warn!(path = %path.display(), "ignoring a compiled module this host did not write (its tag does not match); it is compiled again");
            return None;
        }
        Some(bytes)
    }

    /// Writes `bytes` as the artifact `name`, tagged.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tag = self.mac(name, bytes).finalize().into_bytes();
        let (tmp, mut file) = create_temporary(&self.dir, name)?;
        let written = file
            .write_all(bytes)
            .and_then(|()| file.write_all(&tag))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(name)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    fn mac(&self, name: &str, bytes: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        // The name (module sha256 and engine compatibility) is covered too,
        // so an artifact cannot be moved to stand for another module.
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(bytes);
        mac
    }
}

fn make_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory (a symbolic link?); give the cache a directory of its own",
            dir.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
                io::Error::other(format!(
                    "{} is open to other users and cannot be narrowed to 0700 ({e}); run `chmod 700 {}` or give the cache another directory",
                    dir.display(),
                    dir.display()
                ))
            })?;
        }
    }
    Ok(())
}

fn read_or_make_key(path: &Path) -> io::Result<[u8; 32]> {
    match read_key(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let dir = path.parent().expect("the key is in the cache directory");
    let (tmp, mut file) = create_temporary(dir, KEY_FILE)?;
    let written = file.write_all(&key).and_then(|()| file.sync_all());
    // A hard link appears whole and never replaces a key another process
    // made meanwhile; that one wins.
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key(path),
        Err(e) => Err(e),
    }
}

fn read_key(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = open_no_follow(path)?;
    let meta = file.metadata()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(io::Error::other(format!(
                "the cache's key {} can be read by others; run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
    }
    let mut key = [0u8; 32];
    if !meta.is_file() || meta.len() != 32 {
        return Err(io::Error::other(format!(
            "{} is not a cache key (32 bytes); remove it and the host makes a new one",
            path.display()
        )));
    }
    file.read_exact(&mut key)?;
    Ok(key)
}

fn open_no_follow(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// A new file beside `name` in `dir`, under a name no one else has
/// (create-new, no symbolic link followed), readable by its owner only.
fn create_temporary(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        hex::encode(nonce)
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(&tmp)?;
    Ok((tmp, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_this_host_wrote_is_read_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let cache = DiskCache::open(&dir).unwrap();
        cache.write("a.cwasm", b"compiled").unwrap();
        assert_eq!(cache.read("a.cwasm").as_deref(), Some(&b"compiled"[..]));
        assert_eq!(cache.read("missing.cwasm"), None);
        // Reopened (a restart): the same key.
        let again = DiskCache::open(&dir).unwrap();
        assert_eq!(again.read("a.cwasm").as_deref(), Some(&b"compiled"[..]));

        // Edited: one byte flipped.
        let path = dir.join("a.cwasm");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(cache.read("a.cwasm"), None);
        // Moved from another name: its tag covers the name.
        cache.write("b.cwasm", b"compiled").unwrap();
        std::fs::copy(dir.join("b.cwasm"), &path).unwrap();
        assert_eq!(cache.read("a.cwasm"), None);
        // Planted untagged, and too short to carry a tag.
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(cache.read("a.cwasm"), None);
        // Another host's key (another directory) does not vouch for it.
        let other = DiskCache::open(&root.path().join("other")).unwrap();
        other.write("c.cwasm", b"compiled").unwrap();
        std::fs::copy(root.path().join("other/c.cwasm"), dir.join("c.cwasm")).unwrap();
        assert_eq!(cache.read("c.cwasm"), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_and_key_are_private_and_links_are_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let cache = DiskCache::open(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        cache.write("a.cwasm", b"compiled").unwrap();
        assert_eq!(mode(&dir.join("a.cwasm")), 0o600);
        // Nothing left behind but the key and the artifact.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.cwasm", KEY_FILE]);

        // A symbolic link to a valid artifact is not followed.
        std::fs::rename(dir.join("a.cwasm"), root.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.path().join("elsewhere"), dir.join("a.cwasm")).unwrap();
        assert_eq!(cache.read("a.cwasm"), None);
        // A write replaces the link, not what it points to.
        cache.write("a.cwasm", b"new").unwrap();
        assert!(
            !std::fs::symlink_metadata(dir.join("a.cwasm"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(cache.read("a.cwasm").as_deref(), Some(&b"new"[..]));

        // A directory open to others is narrowed; a key others can read is refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        DiskCache::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = DiskCache::open(&dir).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        // A cache directory that is a symbolic link is refused.
        let link = root.path().join("link");
        std::os::unix::fs::symlink(root.path().join("other-dir"), &link).unwrap();
        std::fs::create_dir(root.path().join("other-dir")).unwrap();
        assert!(DiskCache::open(&link).is_err());
    }
}
